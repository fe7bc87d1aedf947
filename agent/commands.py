"""Command admission: every command from the broker is decoded and checked here before it is queued anywhere.

`receive()` runs on paho's network thread, for each message on `cmd/+`. A command that breaks the contract is
counted by reason (`cctv_agent_commands_rejected_total`), logged at most once per reason and interval, and
dropped without an answer: an id read from a payload that failed validation is not trusted, and answering
every one would queue results nobody asked for ahead of the answers to real requests. So a flood of malformed
commands costs a failed decode each and delays nothing else. A command that validates is handed to the event
loop, where the clip service answers it (accepted, or failed with its reason: unknown camera, spool full ...)
and serves captures by priority, 112 first. After `stop_accepting()` (the first step of a shutdown) a valid
clip request gets `failed` at once instead, and a live command `refused` with `shutting_down`: never silence
for a request that was understood.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from agent.metrics import AgentMetrics
from common.jsonlog import RejectLog
from contract.codec import Delivery, decode, encode
from contract.errors import ContractError
from contract.messages import ArmRequest, ClipRequest, ClipUpdate, LiveRequest, LiveUpdate

log = logging.getLogger(__name__)

Command = ClipRequest | ArmRequest | LiveRequest
# One log line per rejection reason per minute at most; the metric counts every one.
REJECT_LOG_INTERVAL_S = 60.0


class CommandAdmission:
    def __init__(
        self,
        *,
        district: str,
        agent_id: str,
        metrics: AgentMetrics,
        handle: Callable[[Command], None],
        publish: Callable[[Delivery, str], object],
    ) -> None:
        """`handle` takes a valid command on the event loop; `publish` sends a refusal during shutdown."""
        self._district, self._agent_id, self._metrics = district, agent_id, metrics
        self._handle, self._publish = handle, publish
        self._rejects = RejectLog(log, REJECT_LOG_INTERVAL_S)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = True

    def start(self) -> None:
        """Called on the event loop before the MQTT link starts: valid commands are handed to this loop."""
        self._loop = asyncio.get_running_loop()

    def stop_accepting(self) -> None:
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    def receive(self, topic: str, payload: bytes) -> None:
        """One message from the broker, on paho's thread: reject it here, or hand it to the loop."""
        try:
            command = decode(topic, payload)
        except ContractError as exc:
            self._metrics.commands_rejected.labels(exc.reason).inc()
            self._rejects.note(exc, topic)
            return
        if not isinstance(command, Command):  # the codec maps cmd/ topics to commands only
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._admit, command)

    def _admit(self, command: Command) -> None:
        if self._accepting:
            self._handle(command)
        elif isinstance(command, ClipRequest):
            self._refuse(command)
        elif isinstance(command, LiveRequest):
            self._refuse_live(command)
        else:
            log.info("arm of camera %s ignored during shutdown", command.camera_id)

    def _refuse(self, request: ClipRequest) -> None:
        update = ClipUpdate(
            district=self._district,
            request_id=request.request_id,
            camera_id=request.camera_id,
            agent_id=self._agent_id,
            status="failed",
            reason="agent shutting down: send the request again",
            sent_at=datetime.now(UTC),
        )
        self._publish(encode(update), "clip")

    def _refuse_live(self, request: LiveRequest) -> None:
        update = LiveUpdate(
            district=self._district, session_id=request.session_id, camera_id=request.camera_id,
            agent_id=self._agent_id, status="refused", reason="shutting_down", sent_at=datetime.now(UTC),
        )  # fmt: skip
        self._publish(encode(update), "live")
