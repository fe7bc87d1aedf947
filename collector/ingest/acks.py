"""Which received QoS 1 messages may be acknowledged: those whose chunk the writer has committed.

The MQTT side numbers the chunks it hands to the writer and records here, per chunk, the message ids of its
QoS 1 messages and the connection they came in on. The writer reports "committed through chunk N" after each
commit; a message it rejected is done too (delivered again, it would be rejected again). paho's network
thread then takes the ids that are due, in the order received, and acknowledges them. Ids from an
earlier connection are forgotten: the broker sends those messages again on the new one, and the same id
may by then name another message.
"""

from __future__ import annotations

import threading
from collections import deque


class AckLedger:
    """Chunks waiting for their commit, oldest first; safe to use from any thread."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[int, int, list[int]]] = deque()  # (chunk, connection, message ids)
        self._committed = 0
        self._changed = threading.Condition()

    def add(self, chunk: int, connection: int, mids: list[int]) -> None:
        """Record a chunk's QoS 1 message ids; chunks are added in increasing order."""
        with self._changed:
            self._waiting.append((chunk, connection, mids))

    def committed(self, through: int) -> None:
        """The writer has committed every chunk up to `through`."""
        with self._changed:
            self._committed = max(self._committed, through)

    def due(self, connection: int) -> list[int]:
        """The ids to acknowledge now on `connection`, in the order received; they leave the ledger."""
        with self._changed:
            mids: list[int] = []
            while self._waiting and self._waiting[0][0] <= self._committed:
                _chunk, conn, chunk_mids = self._waiting.popleft()
                if conn == connection:
                    mids.extend(chunk_mids)
            self._changed.notify_all()
            return mids

    def waiting(self) -> int:
        """QoS 1 messages received and not yet acknowledged."""
        with self._changed:
            return sum(len(mids) for _chunk, _conn, mids in self._waiting)

    def wait_sent(self, timeout_s: float) -> bool:
        """Wait until every id that is due was taken by `due`; False on timeout. Ids of chunks never committed
        (a stop that found the store unavailable) are not waited for: the broker sends them again."""
        with self._changed:
            return self._changed.wait_for(self._nothing_due, timeout_s)

    def _nothing_due(self) -> bool:
        return not self._waiting or self._waiting[0][0] > self._committed
