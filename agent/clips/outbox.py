"""Clip results that must reach the collector: kept in SQLite until the broker acknowledges them.

A ClipUpdate is written here first (fsynced), then published at QoS 1; its row is deleted only once paho
reports the PUBACK. A broker restart, a dropped uplink or an agent killed mid-way therefore delays a result,
never loses it. Only the newest update of a request is kept: after an outage the collector gets the final
state, not a replay of every progress step. The collector upserts by request id, so the occasional duplicate
(a message sent again after `republish_after_s` without acknowledgement) is harmless.

While the broker is unreachable paho still takes a QoS 1 publish (rc MQTT_ERR_NO_CONN) and sends it on
reconnect. Such a receipt counts as in flight, and while one is outstanding nothing else is handed to paho:
the rows wait here, on disk, instead of piling up in paho's memory queue (whose limit would then drop the
agent's status messages). So one message per outage is queued, again every `republish_after_s` at most.
A receipt paho gave up on (queue full) is retried after `retry_refused_s`, not at once.

The same database holds the request ids already seen, so a command delivered twice (QoS 1) makes one clip.
Ids older than `seen_ids_retention_s` are forgotten by `prune_seen` (redelivery happens within minutes).
Used from the event loop only (one SQLite connection, not shared with threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from paho.mqtt.enums import MQTTErrorCode

from contract.messages import ClipUpdate

log = logging.getLogger(__name__)

# `seen.seen_at` (epoch seconds) is what pruning uses; `received_at` (ISO 8601) stays for people reading it.
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (request_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (request_id TEXT PRIMARY KEY, received_at TEXT NOT NULL, seen_at REAL);
"""
# Databases made before `seen_at` existed get it, filled from `received_at` (or now, if that is unreadable).
BACKFILL_SEEN_AT = "UPDATE seen SET seen_at = COALESCE((julianday(received_at) - 2440587.5) * 86400.0, ?)"
SEEN_INDEX = "CREATE INDEX IF NOT EXISTS seen_by_time ON seen (seen_at)"


class PublishReceipt(Protocol):
    """What a QoS 1 publish hands back; paho's MQTTMessageInfo is one."""

    def is_published(self) -> bool: ...


# Queue one update at QoS 1 and return its receipt; None (or an exception) = not queued, try again later.
Publish = Callable[[ClipUpdate], PublishReceipt | None]


class Outbox:
    def __init__(
        self,
        path: Path,
        publish: Publish,
        *,
        republish_after_s: float = 60.0,
        max_inflight: int = 200,
        poll_s: float = 0.05,
        retry_refused_s: float = 1.0,
        seen_retention_s: float = 30 * 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;" + SCHEMA)
        self._clock = clock
        self._seen_retention_s = seen_retention_s
        self._migrate()
        self._publish = publish
        self._republish_after_s = republish_after_s
        self._max_inflight = max_inflight
        self._poll_s = poll_s
        self._retry_refused_s = retry_refused_s
        self._hold_until = 0.0  # time.monotonic() before which nothing is published (after a refusal)
        self._inflight: dict[tuple[str, int], tuple[PublishReceipt, float]] = {}
        self._wake = asyncio.Event()
        next_seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox").fetchone()[0]
        self._seq: int = next_seq

    def put(self, update: ClipUpdate) -> None:
        """Store (replacing an older update of the same request) and wake the sender."""
        self._db.execute(
            "INSERT OR REPLACE INTO outbox (request_id, seq, payload) VALUES (?, ?, ?)",
            (update.request_id, self._seq, update.model_dump_json(exclude_none=True)),
        )
        self._seq += 1
        self._wake.set()

    def pending(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        return count

    def seen(self, request_id: str) -> bool:
        """True if the request id was recorded before (a duplicate delivery)."""
        row = self._db.execute("SELECT 1 FROM seen WHERE request_id = ?", (request_id,)).fetchone()
        return row is not None

    def first_sight(self, request_id: str) -> bool:
        """Record a request id; False if it was seen before (a duplicate delivery)."""
        now = self._clock()
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO seen (request_id, received_at, seen_at) VALUES (?, ?, ?)",
            (request_id, datetime.fromtimestamp(now, UTC).isoformat(), now),
        )
        return cursor.rowcount == 1

    def prune_seen(self, now: float) -> int:
        """Forget request ids first seen more than `seen_retention_s` before `now`; how many."""
        cutoff = now - self._seen_retention_s
        cursor = self._db.execute("DELETE FROM seen WHERE seen_at < ?", (cutoff,))
        if cursor.rowcount:
            log.info("forgot %s request ids seen over %s s ago", cursor.rowcount, self._seen_retention_s)
        return cursor.rowcount

    async def run(self, stop: asyncio.Event) -> None:
        """Send and collect acknowledgements until `stop` is set."""
        while not stop.is_set():
            self._send_pending()
            self._collect_acks()
            self._wake.clear()
            wait_s = self._poll_s if self._inflight else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every stored update is acknowledged (for a graceful stop); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            self._send_pending()
            self._collect_acks()
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(self._poll_s)
        return True

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(seen)")}
        if "seen_at" not in columns:
            log.info("outbox database: adding seen.seen_at")
            self._db.execute("BEGIN IMMEDIATE")
            with self._db:  # commit, or roll back on error: a crash midway leaves the old schema
                self._db.execute("ALTER TABLE seen ADD COLUMN seen_at REAL")
                self._db.execute(BACKFILL_SEEN_AT, (self._clock(),))
        self._db.execute(SEEN_INDEX)

    def _send_pending(self) -> None:
        if time.monotonic() < self._hold_until or self._offline():
            return
        rows = self._db.execute("SELECT request_id, seq, payload FROM outbox ORDER BY seq").fetchall()
        for request_id, seq, payload in rows:
            if (request_id, seq) in self._inflight:
                continue
            if len(self._inflight) >= self._max_inflight:
                return
            try:
                receipt = self._publish(ClipUpdate.model_validate_json(payload))
            except Exception as exc:  # the link refused it (queue full, not started): retry a bit later
                log.warning("publish of clip update %s refused: %s", request_id, exc)
                self._hold_until = time.monotonic() + self._retry_refused_s
                return
            if receipt is None:
                self._hold_until = time.monotonic() + self._retry_refused_s
                return
            self._inflight[(request_id, seq)] = (receipt, time.monotonic())
            if _queued_offline(receipt):  # the broker is away: this one waits in paho, the rest here
                return

    def _offline(self) -> bool:
        """A receipt queued while disconnected is still waiting: the link is (or was just) down."""
        return any(_queued_offline(r) and not _acked(r) for r, _ in self._inflight.values())

    def _collect_acks(self) -> None:
        now = time.monotonic()
        for key, (receipt, sent_at) in list(self._inflight.items()):
            done = _acked(receipt)
            if done is None:  # paho gave up on this message: send it again, after a pause
                del self._inflight[key]
                self._hold_until = now + self._retry_refused_s
            elif done:
                self._db.execute("DELETE FROM outbox WHERE request_id = ? AND seq = ?", key)
                del self._inflight[key]
            elif now - sent_at > self._republish_after_s:
                del self._inflight[key]


def _queued_offline(receipt: PublishReceipt) -> bool:
    return getattr(receipt, "rc", None) == MQTTErrorCode.MQTT_ERR_NO_CONN


def _acked(receipt: PublishReceipt) -> bool | None:
    """True once the broker acknowledged; False while in flight; None if the message is not queued."""
    try:
        return receipt.is_published()
    except ValueError:  # paho's queue was full: never queued
        return None
    except RuntimeError:
        if not _queued_offline(receipt):
            return None
        # Queued while disconnected: paho sends it on reconnect and marks it published on the PUBACK, but
        # its rc stays NO_CONN, so is_published() keeps raising; the flag is the only way to see the ack.
        return bool(getattr(receipt, "_published", False))
