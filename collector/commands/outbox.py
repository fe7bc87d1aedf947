"""The durable command outbox: a command committed in the index reaches its district agent, across broker
outages and collector restarts.

`enqueue(tx, command)` writes a signed command into `command_outbox` in the caller's transaction, so the
request, its audit record and its delivery commit together or not at all. After the commit the caller calls
`OutboxPublisher.notify()`, and the publisher sends it within milliseconds.

The publisher is a thread with its own MQTT client and its own store connection. Each round it marks
commands whose `expires_at` passed unanswered as `expired`, publishes the due ones (never published, or last
published `commands.republish_interval_s` ago) at QoS 1 and waits for their PUBACKs. A clip command stays
pending until the agent answers: the ingest writer records the first ClipUpdate of its request id in the same
transaction that stores it (store_sql.py MARK_ANSWERED). An arm or live command has no answer: it is done
once the broker took it (PUBACK), since the agent's persistent session keeps it at the broker while the agent
is away (a live command's outcome comes back as LiveUpdates; the agent refuses it once it expired).
All state is in the database: a new publisher on the same store carries on where the last one stopped.

Every command may arrive more than once (QoS 1, republication, two collectors sharing one index): agents
handle a request id once.

Lifecycle: start it after the ingest writer (answers must be recorded) and stop it before.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.commands.signing import Command
from collector.config import CollectorSettings
from collector.index.store import Store, StoreError
from collector.index.tx import Tx
from common.mqtt_client import new_client
from contract.codec import encode
from contract.messages import ArmRequest, ClipRequest

log = logging.getLogger(__name__)

KINDS = ("clip", "arm", "live")
_DONE_ON_PUBACK = frozenset({"arm", "live"})
_MAX_ACK_WAIT_S = 10.0

INSERT = """
INSERT INTO command_outbox (request_id, kind, district, topic, payload, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
EXPIRE = """
UPDATE command_outbox SET answered_at = ?, answer_status = 'expired'
WHERE answered_at IS NULL AND expires_at <= ?
RETURNING request_id, kind, district
"""
DUE = """
SELECT request_id, kind, topic, payload, attempts FROM command_outbox
WHERE answered_at IS NULL AND (last_published_at IS NULL OR last_published_at <= ?)
ORDER BY created_at LIMIT ?
"""
ATTEMPTED = "UPDATE command_outbox SET last_published_at = ?, attempts = attempts + 1 WHERE request_id = ?"
PUBLISHED = """
UPDATE command_outbox SET answered_at = ?, answer_status = 'published'
WHERE request_id = ? AND answered_at IS NULL
"""
# Never-published rows count as due at time 0: the next round starts at once.
PENDING = """
SELECT COUNT(*), MIN(COALESCE(last_published_at, 0)), MIN(expires_at) FROM command_outbox
WHERE answered_at IS NULL
"""


def enqueue(tx: Tx, command: Command, now: float | None = None) -> None:
    """Queue a signed command in the caller's transaction (call `OutboxPublisher.notify()` after the commit).
    ValueError for an unsigned command; a request id already queued fails the transaction."""
    enqueue_many(tx, [command], now)


def enqueue_many(tx: Tx, commands: Sequence[Command], now: float | None = None) -> None:
    """`enqueue` for several commands, in one statement."""
    created = time.time() if now is None else now
    tx.executemany(INSERT, [_row(command, created) for command in commands])


def _row(command: Command, created: float) -> tuple[Any, ...]:
    request_id, kind = _identity(command)
    if command.signature is None or command.expires_at is None:
        raise ValueError(f"command {request_id} is not signed: sign it with CommandSigner first")
    delivery = encode(command)
    return (request_id, kind, command.district, delivery.topic, delivery.payload.decode(), created,
            command.expires_at.timestamp())  # fmt: skip


def _identity(command: Command) -> tuple[str, str]:
    """(outbox id, kind). A live session sends several commands (start, renew, stop): each its own row."""
    if isinstance(command, ClipRequest):
        return command.request_id, "clip"
    if isinstance(command, ArmRequest):
        return command.request_id, "arm"
    return f"{command.session_id}.{command.action}.{uuid.uuid4().hex[:8]}", "live"


class OutboxMetrics:
    """The outbox's metrics, on the collector's registry. Labels: the command kind only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.pending = Gauge(
            "cctv_collector_command_outbox_pending",
            "Commands waiting for their agent's answer",
            registry=registry,
        )
        self.published = Counter(
            "cctv_collector_commands_published_total",
            "Command publications the broker acknowledged (PUBACK), repeats included, by kind",
            ["kind"],
            registry=registry,
        )
        self.republished = Counter(
            "cctv_collector_commands_republished_total",
            "Acknowledged publications that repeated an unanswered command, by kind",
            ["kind"],
            registry=registry,
        )
        self.expired = Counter(
            "cctv_collector_commands_expired_total",
            "Commands that expired before their agent answered, by kind",
            ["kind"],
            registry=registry,
        )
        for kind in KINDS:
            for counter in (self.published, self.republished, self.expired):
                counter.labels(kind=kind)


@dataclass(frozen=True, slots=True)
class _Due:
    request_id: str
    kind: str
    topic: str
    payload: bytes
    attempts: int


class OutboxPublisher:
    """Publishes the outbox from its own thread; `notify()` wakes it after a commit."""

    def __init__(
        self,
        settings: CollectorSettings,
        registry: CollectorRegistry,
        open_store: Callable[[], Store],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings.commands
        self._mqtt = settings.mqtt
        self._open_store = open_store
        self._clock = clock
        self.metrics = OutboxMetrics(registry)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-outbox", daemon=True)
        base = settings.mqtt.client_id or settings.collector_id
        self._client = new_client(self._mqtt.model_copy(update={"client_id": f"{base}-commands"}), base)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        # A clean session: what is unanswered lives in the database, not at the broker.
        self._client.connect_async(self._mqtt.host, self._mqtt.port, keepalive=self._mqtt.keepalive_s)
        self._client.loop_start()
        self._thread.start()

    def connected(self) -> bool:
        return self._client.is_connected()

    def notify(self) -> None:
        """New commands were committed: publish them now rather than at the next round."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current round (at most one PUBACK wait), then disconnect. Unanswered commands stay in
        the outbox for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self._client.disconnect()
        self._client.loop_stop()

    def _run(self) -> None:
        store = self._open_store()
        try:
            while not self._stopping.is_set():
                delay = self._round_safely(store)
                self._wake.wait(delay)
                self._wake.clear()
        finally:
            store.close()

    def _round_safely(self, store: Store) -> float:
        try:
            return self._round(store)
        except StoreError as exc:
            log.warning("outbox: the store is unavailable (%s); retrying", exc)
        except Exception:  # the thread must outlive any one bad round
            log.exception("outbox round failed")
        return self.settings.republish_interval_s

    def _round(self, store: Store) -> float:
        """Expire, publish what is due, record it; the seconds until the next round is due."""
        now = self._clock()
        interval = self.settings.republish_interval_s
        with store.transaction() as tx:
            self._expire(tx, now)
            rows = tx.query(DUE, (now - interval, self.settings.batch)) if self.connected() else []
        due = [_Due(r[0], r[1], r[2], str(r[3]).encode(), int(r[4])) for r in rows]
        acked = self._publish(due)
        with store.transaction() as tx:
            self._record(tx, due, acked, self._clock())
            count, next_publish, next_expiry = tx.query(PENDING)[0]
        self.metrics.pending.set(int(count))
        if not count or not self.connected():
            return interval  # on_connect wakes the thread when the broker is back
        soonest = min(float(next_publish) + interval, float(next_expiry))
        return min(interval, max(0.0, soonest - self._clock()))

    def _expire(self, tx: Tx, now: float) -> None:
        for request_id, kind, district in tx.query(EXPIRE, (now, now)):
            self.metrics.expired.labels(kind=kind).inc()
            log.warning(
                "command %s for %s expired unanswered",
                request_id,
                district,
                extra={"request_id": request_id, "district": district, "reason": "command_expired"},
            )

    def _publish(self, due: list[_Due]) -> set[str]:
        """Publish at QoS 1; the request ids the broker acknowledged within the wait."""
        sent = [(d.request_id, self._client.publish(d.topic, d.payload, qos=1)) for d in due]
        deadline = time.monotonic() + min(self.settings.republish_interval_s, _MAX_ACK_WAIT_S)
        return {request_id for request_id, info in sent if _acknowledged(info, deadline)}

    def _record(self, tx: Tx, due: list[_Due], acked: set[str], now: float) -> None:
        tx.executemany(ATTEMPTED, [(now, d.request_id) for d in due])
        published = [(now, d.request_id) for d in due if d.kind in _DONE_ON_PUBACK and d.request_id in acked]
        tx.executemany(PUBLISHED, published)
        for d in due:
            if d.request_id in acked:
                self.metrics.published.labels(kind=d.kind).inc()
                if d.attempts:
                    self.metrics.republished.labels(kind=d.kind).inc()

    # -- paho callbacks (network thread): they must never raise ---------------------------------------------
    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("outbox: the broker refused the connection: %s", reason)
            return
        log.info("outbox connected to the broker")
        self.notify()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._stopping.is_set():
            log.warning("outbox disconnected from the broker (%s); paho reconnects", reason)


def _acknowledged(info: mqtt.MQTTMessageInfo, deadline: float) -> bool:
    try:
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        return info.is_published()
    except (RuntimeError, ValueError):  # paho could not send it (connection lost): the next round retries
        return False
