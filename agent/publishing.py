"""What the agent publishes, and when: the publishing policy, apart from the loops that observe the cameras.

- Presence (retained): `online` with each connection's session, `offline` as that connection's last will and
  on a clean stop. Sessions are the link's (agent/mqtt_link.py): a will never loses against its own `online`.
- After any (re)connect: presence, then every camera's meta and known status, since the broker may have lost
  its retained messages.
- Meta (retained) when it differs from what was last published; status when a camera's state changes.
- The district's health snapshot on a schedule (the loop that calls it owns the schedule).

One camera whose values break the contract is counted and skipped: it must not stop the others' publishing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from agent import __version__
from agent.metrics import AgentMetrics
from agent.registry import CameraRecord, Registry
from contract.codec import Delivery, encode
from contract.districts import korean_name
from contract.messages import AgentPresence, AgentState, CameraMeta

log = logging.getLogger(__name__)

STATES = ("online", "degraded", "offline", "unauthorized", "unknown")


class Publishing:
    def __init__(
        self,
        registry: Registry,
        metrics: AgentMetrics,
        *,
        publish: Callable[[Delivery, str], object],
        clock_skew_limit_s: float,
    ) -> None:
        """`publish(delivery, kind)` sends one message (the MQTT link; dropped while disconnected)."""
        self._registry, self._metrics, self._publish = registry, metrics, publish
        self._clock_skew_limit_s = clock_skew_limit_s
        self.started_at = datetime.now(UTC)

    def presence(self, state: AgentPresence, session: int) -> Delivery:
        """The retained presence of `session`. Also runs on paho's thread (the will of each connection)."""
        message = AgentState(
            district=self._registry.district,
            agent_id=self._registry.agent_id,
            state=state,
            session=session,
            district_name=korean_name(self._registry.district),
            version=__version__,
            started_at=self.started_at,
            cameras=len(self._registry),
            sent_at=datetime.now(UTC),
        )
        return encode(message)

    def retained_state(self, session: int) -> list[Delivery]:
        """What the broker must hold after any (re)connect: presence, then every camera's meta and status."""
        deliveries = [self.presence("online", session)]
        for record in self._registry.records.values():
            meta = self._meta(record)
            if meta is not None:
                deliveries.append(encode(meta))
            if record.state != "unknown":
                deliveries.append(encode(self._registry.status(record)))
        return deliveries

    def changes(self, check_meta: bool = False) -> None:
        """Status of every camera whose state changed (and meta that changed, with `check_meta`)."""
        for record in self._registry.records.values():
            if check_meta:
                self.meta(record)
            if record.reevaluate(self._clock_skew_limit_s):
                self._publish(encode(self._registry.status(record)), "status")
        counts = self._registry.counts_by_state()
        for state in STATES:
            self._metrics.cameras.labels(state).set(counts.get(state, 0))

    def meta(self, record: CameraRecord) -> None:
        """Publish a camera's meta when it differs from what was last published (retained: once is enough)."""
        meta = self._meta(record)
        if meta is None:
            return
        fingerprint = meta.model_dump_json(exclude={"updated_at"})
        if fingerprint != record.published_meta:
            self._publish(encode(meta), "meta")
            record.published_meta = fingerprint

    def snapshot(self) -> None:
        """The district's health snapshot (dropped while disconnected: the next one replaces it)."""
        self._publish(encode(self._registry.snapshot()), "health")

    def _meta(self, record: CameraRecord) -> CameraMeta | None:
        """The camera's meta; None (counted, logged) if what it reported breaks the contract."""
        try:
            return self._registry.meta(record)
        except ValidationError:
            self._metrics.errors.labels("hostile").inc()
            log.warning("camera metadata outside the contract", extra={"camera": record.camera_id})
            return None
