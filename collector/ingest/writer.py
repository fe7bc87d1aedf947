"""The writer process: decodes what the MQTT side received, checks it, and commits it in batches.

It runs in its own process so decoding and SQL do not compete with paho's network thread for the GIL
(measured in one process: 8.5k msg/s against 19k for a bare subscriber). The MQTT side sends chunks of raw
`(topic, payload)` pairs through a bounded multiprocessing queue; `None` asks the writer to commit what it has
and exit. After each commit (and whenever it rejected something, and after each failed attempt while the store
is unavailable) the writer sends a `WriterStats` back, which the parent turns into Prometheus metrics and
health. Chunks are numbered: a report's `committed_through` tells the MQTT side which messages it may now
acknowledge (acks.py). The `stop` event asks a writer stuck on an unavailable store to give up; what
it did not commit is never reported as committed, so never acknowledged.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any, TypeVar

from collector.config import CollectorSettings
from collector.index.store import (
    Batch,
    DeadLetter,
    Store,
    StoreError,
    StoreRejectedError,
    StoreUnavailableError,
    open_store,
)
from collector.ingest import outcomes
from common import jsonlog
from contract.codec import decode
from contract.errors import ContractError
from contract.messages import AgentState, AnyMessage, CameraMeta, CameraStatus, ClipUpdate, HealthSnapshot

log = logging.getLogger(__name__)

Event = threading.Event | ProcessEvent
T = TypeVar("T")
Chunk = tuple[int, list[tuple[str, bytes]]]  # (chunk number, messages)
KIND: dict[type[Any], str] = {
    AgentState: "agent_state",
    CameraMeta: "camera_meta",
    CameraStatus: "camera_status",
    HealthSnapshot: "health",
    ClipUpdate: "clip",
}


@dataclass
class WriterStats:
    """What one batch did, or one failed attempt to commit it (`store_errors`, `store_error`, and `held`:
    the messages the writer holds uncommitted meanwhile); `final` marks the writer's last report."""

    received: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    written: int = 0
    batch_seconds: float | None = None
    store_errors: int = 0
    committed_through: int | None = None  # every chunk up to this number is done (committed or rejected)
    store_error: str | None = None
    held: int = 0
    final: bool = False
    clip_outcomes: list[outcomes.ClipOutcome] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message and what it came as, so that a message the index refuses can be dead-lettered."""

    topic: str
    payload: bytes
    message: AnyMessage


class AgentGate:
    """Accepts a district's camera, health and clip messages only from the agent that announced itself for
    that district with an AgentState (live, retained, or remembered in the index from an earlier run), and
    never for a camera the index knows in another district.

    Without broker ACLs anyone may publish anything: an agent can still announce itself for a district that is
    not its own under a new id, or forge another agent's id. Per-district broker credentials and topic ACLs
    close that; this gate keeps one agent id to one district and one camera to one district."""

    def __init__(self, known: dict[str, str], cameras: dict[str, str], required: bool) -> None:
        self.known = dict(known)
        self.cameras = dict(cameras)  # camera id -> district
        self.required = required

    def check(self, message: AnyMessage, rejected: Counter[str]) -> AnyMessage:
        """The message to index (a health snapshot without other districts' cameras, each counted in
        `rejected`); ContractError if the whole message is refused."""
        if isinstance(message, AgentState):
            self._check_agent(message)
            self.known[message.district] = message.agent_id
            return message
        agent_id = getattr(message, "agent_id", None)
        if self.required and self.known.get(message.district) != agent_id:
            raise ContractError("unknown_agent", f"agent {agent_id!r} for district {message.district!r}")
        if isinstance(message, HealthSnapshot):
            return self._own_entries(message, rejected)
        camera_id = getattr(message, "camera_id", None)
        if camera_id is not None and not self._claim(camera_id, message.district):
            raise ContractError(
                "camera_of_other_district",
                f"camera {camera_id!r} of {self.cameras[camera_id]!r} from {message.district!r}",
            )
        return message

    def _check_agent(self, state: AgentState) -> None:
        for district, agent_id in self.known.items():
            if agent_id == state.agent_id and district != state.district:
                raise ContractError(
                    "agent_of_other_district", f"agent {agent_id!r} of {district!r} for {state.district!r}"
                )

    def _claim(self, camera_id: str, district: str) -> bool:
        return self.cameras.setdefault(camera_id, district) == district

    def _own_entries(self, snap: HealthSnapshot, rejected: Counter[str]) -> HealthSnapshot:
        own = [e for e in snap.cameras if self._claim(e.camera_id, snap.district)]
        if len(own) == len(snap.cameras):
            return snap
        rejected["camera_of_other_district"] += len(snap.cameras) - len(own)
        return snap.model_copy(update={"cameras": own})


class BatchWriter:
    """Decode, gate, batch, commit: the writer process's loop, separate from process plumbing for tests.

    A batch the database refuses (`StoreRejectedError`) is split in halves, each committed on its own, until
    the refused message is alone: it is dead-lettered with its reason and the rest is committed, in order. A
    store that is unavailable is retried with capped backoff, reporting each failed attempt, until it is back
    or a stop is requested; such a batch is never dead-lettered."""

    def __init__(
        self,
        settings: CollectorSettings,
        store: Store,
        report: Callable[[WriterStats], None] = lambda _s: None,
        stop: Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.report = report
        self.stop = stop or threading.Event()
        self.parent = os.getppid()
        self.gate = AgentGate(
            store.known_agents(), store.camera_districts(), settings.ingest.require_known_agent
        )
        self.rejects = jsonlog.RejectLog(log, settings.ingest.reject_log_interval_s)

    def add(self, pending: list[Received], stats: WriterStats, topic: str, payload: bytes) -> None:
        try:
            message = self.gate.check(decode(topic, payload), stats.rejected)
        except ContractError as exc:
            stats.rejected[exc.reason] += 1
            self.rejects.note(exc, topic)
            return
        except Exception:
            stats.rejected["internal_error"] += 1
            self.rejects.unexpected(topic)
            return
        kind = KIND.get(type(message))
        if kind is not None:  # commands travel the other way; nothing to index
            stats.received[kind] += 1
            pending.append(Received(topic, payload, message))

    def commit(self, pending: list[Received], stats: WriterStats) -> bool:
        """Commit `pending` (minus what the database refuses); False when a stop request ended an outage
        before everything was committed. The final clip answers' outcomes go into `stats` (outcomes.py)."""
        finals = outcomes.final_ids(item.message for item in pending)
        was = self._read(lambda: outcomes.before(self.store, finals)) if finals else None
        began = time.perf_counter()
        done = self._commit(pending, stats)
        stats.batch_seconds = time.perf_counter() - began
        if done and was is not None:
            stats.clip_outcomes = self._read(lambda: outcomes.after(self.store, was, time.time())) or []
        return done

    def _read(self, read: Callable[[], T]) -> T | None:
        """A read for the service-level metrics only: a store error skips it (ingest never waits for it)."""
        try:
            return read()
        except StoreError as exc:
            log.warning("clip outcomes not counted: %s", exc)
            return None

    def _commit(self, items: list[Received], stats: WriterStats) -> bool:
        batch = Batch()
        for item in items:
            batch.add(item.message)
        try:
            if not self._until_available(lambda: self.store.apply(batch), len(items)):
                return False
        except StoreRejectedError as exc:
            if len(items) == 1:
                return self._dead_letter(items[0], exc, stats)
            half = len(items) // 2
            return self._commit(items[:half], stats) and self._commit(items[half:], stats)
        stats.written += len(items)
        return True

    def _dead_letter(self, item: Received, exc: StoreRejectedError, stats: WriterStats) -> bool:
        letter = DeadLetter(item.topic, item.payload, exc.reason, str(exc), time.time())
        keep = self.settings.ingest.dead_letters_keep
        if not self._until_available(lambda: self.store.dead_letter([letter], keep), 1):
            return False
        stats.dead_letters[exc.reason] += 1
        log.error(
            "dead-lettered a message on %s that the index refused: %s",
            item.topic[:200],
            exc,
            extra={"reason": exc.reason},
        )
        return True

    def _until_available(self, write: Callable[[], None], held: int) -> bool:
        """Run `write` until the store takes it (True) or a stop is requested while it is unavailable."""
        delay = 0.1
        while True:
            try:
                write()
                return True
            except StoreUnavailableError as exc:
                self.report(WriterStats(store_errors=1, store_error=str(exc), held=held))
                if self.stop.is_set() or self.orphaned():
                    return False
                log.warning("the store is unavailable (%s); retrying %s messages in %.1f s", exc, held, delay)
                if self.stop.wait(delay):
                    continue  # one last attempt before giving up
                delay = min(delay * 2, 10.0)

    def orphaned(self) -> bool:
        """True once the collector process that started this writer is gone (killed): stop too."""
        return os.getppid() != self.parent


def run(
    settings: CollectorSettings, chunks: Queue[Chunk | None], reports: Queue[WriterStats], stop: Event
) -> None:
    """Entry point of the writer process. After a stop request found the store unavailable, what is still
    queued is read and left uncommitted, so the MQTT side is never blocked on a full queue."""
    # The parent owns shutdown (a service manager may signal the whole process group): it sets `stop`.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jsonlog.setup(settings.log_level)
    store = open_store(settings.store.url)
    try:
        writer = BatchWriter(settings, store, reports.put, stop)
        committing, ended, left = True, False, 0
        while not ended and not writer.orphaned():
            pending: list[Received] = []
            stats = WriterStats()
            ended, through = _collect(writer, chunks, pending, stats)
            if pending and committing:
                committing = writer.commit(pending, stats)
            if committing:
                stats.committed_through = through
            else:  # abandoned on stop: neither committed nor acknowledged; the broker delivers it again
                left += len(pending) - stats.written - stats.dead_letters.total()
            if through is not None or stats.rejected:
                reports.put(stats)
        if left:
            log.error("stopped with %s messages not committed (the store was unavailable)", left)
    finally:
        store.close()
        reports.put(WriterStats(final=True))


def _collect(
    writer: BatchWriter, chunks: Queue[Chunk | None], pending: list[Received], stats: WriterStats
) -> tuple[bool, int | None]:
    """Fill one batch (`ingest.batch_max` messages or `ingest.batch_ms`) from whole chunks; returns whether
    asked to stop, and the number of the last chunk taken (None if none)."""
    batch_max, batch_s = writer.settings.ingest.batch_max, writer.settings.ingest.batch_ms / 1000
    through = None
    try:
        chunk = chunks.get(timeout=0.5)
    except queue.Empty:
        return False, through
    deadline = time.monotonic() + batch_s
    while True:
        if chunk is None:
            return True, through
        through, messages = chunk
        for topic, payload in messages:
            writer.add(pending, stats, topic, payload)
        remaining = deadline - time.monotonic()
        if len(pending) >= batch_max or remaining <= 0:
            return False, through
        try:
            chunk = chunks.get(timeout=remaining)
        except queue.Empty:
            return False, through
