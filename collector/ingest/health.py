"""What /healthz says about the path from the MQTT queue to the index, from the writer's reports.

Failing: the last attempt to commit failed (the store is unavailable) and none succeeded since. Stalled:
messages waited and nothing was committed or dead-lettered for `ingest.stall_after_s`, whatever the reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from collector.ingest.writer import WriterStats


class IngestHealth:
    """Updated by the reports thread, read by the API and the metrics scrape (hence the lock)."""

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_progress = clock()
        self._waiting_since: float | None = None
        self._failing_since: float | None = None
        self._store_error: str | None = None
        self._held = 0

    def note(self, stats: WriterStats) -> None:
        with self._lock:
            if stats.written or stats.dead_letters:
                self._last_progress = self._clock()
                self._failing_since, self._store_error, self._held = None, None, 0
            elif stats.store_errors:
                if self._failing_since is None:
                    self._failing_since = self._clock()
                self._store_error, self._held = stats.store_error, stats.held

    def held(self) -> int:
        """Messages the writer holds while it waits for the store (not in the queue any more)."""
        with self._lock:
            return self._held

    def status(self, queued: int) -> dict[str, Any]:
        """`store_ok` and `ingest_stalled` for /healthz, with the last store error while failing. Stalled:
        every call for `stall_after_s` saw messages waiting, and nothing was committed meanwhile."""
        with self._lock:
            now = self._clock()
            if queued == 0:
                self._waiting_since = None
            elif self._waiting_since is None:
                self._waiting_since = now
            waiting = self._waiting_since
            idle = 0.0 if waiting is None else now - max(waiting, self._last_progress)
            failing = self._failing_since
            return {
                "store_ok": failing is None,
                "store_error": self._store_error,
                "store_failing_s": None if failing is None else round(now - failing, 1),
                "ingest_stalled": idle > self.stall_after_s,
            }
