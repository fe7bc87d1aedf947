"""A moving-window rate limiter per key (account, agency): at most `limit` hits in any `window_s` seconds.

Exact: each key keeps the times of its allowed hits within the window (at most `limit` of them), so
Retry-After is the moment the oldest one leaves the window. Refused hits are not counted, so a client that
waits as told gets through. Memory is bounded: beyond `max_keys`, the least recently used key is forgotten
(keys idle for a window lose nothing; only under a flood of distinct keys may a busy one be reset).
Thread-safe: the API may call it from a thread pool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque


class RateLimiter:
    def __init__(self, limit: int, window_s: float = 60.0, max_keys: int = 100_000) -> None:
        if limit < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("limit, window_s and max_keys must be positive")
        self.limit = limit
        self.window_s = window_s
        self._max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str, now: float) -> float | None:
        """Count one request for `key`: None if allowed, else the seconds to wait (Retry-After)."""
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
                self._evict()
            else:
                self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(hits[0] + self.window_s - now, 0.001)
            hits.append(now)
            return None

    def __len__(self) -> int:
        return len(self._hits)

    def _evict(self) -> None:
        while len(self._hits) > self._max_keys:
            self._hits.popitem(last=False)
