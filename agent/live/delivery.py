"""One live session's way to the bucket: its init segments and segments, in order, one PUT each; each segment
announced once its object exists.

A thread per session takes the pieces in the order the feed made them. The object key of a segment takes the
next sequence number when its upload begins (sequences stay contiguous whatever is dropped). While S3 is
unreachable the head piece is retried with backoff and the rest wait behind it, up to `queue_max_bytes`;
beyond that the oldest waiting segments are dropped (counted as failed) and the first segment after a drop
says `discontinuity`. Nothing is re-dated: `started_at` is always the capture time, so a segment uploaded late
is seen to be late. When the session ends, what waits gets `drain_s` to reach S3, then the end is announced.

Keys (design.md): live/{district}/{session}/init-{n}.mp4, live/{district}/{session}/{sequence:08d}.m4s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from agent.backoff import full_jitter
from agent.clips.s3 import UploadError
from agent.live.metrics import LiveMetrics
from contract.messages import LiveSegmentInfo

log = logging.getLogger(__name__)

END_DRAIN_S = 5.0  # after the session ends, waiting pieces get this long to reach S3
RETRY_BASE_S, RETRY_MAX_S = 0.25, 5.0


@dataclass(frozen=True)
class InitItem:
    number: int
    data: bytes


@dataclass(frozen=True)
class SegmentItem:
    init_number: int
    data: bytes
    started_at: float  # epoch seconds: capture time of its first frame
    duration_s: float
    discontinuity: bool


Item = InitItem | SegmentItem
Put = Callable[[str, bytes, str], None]  # key, body, content type; raises UploadError


@dataclass(frozen=True)
class LiveKeys:
    district: str
    session_id: str

    def init(self, number: int) -> str:
        return f"live/{self.district}/{self.session_id}/init-{number}.mp4"

    def segment(self, sequence: int) -> str:
        return f"live/{self.district}/{self.session_id}/{sequence:08d}.m4s"


class Delivery:
    def __init__(
        self,
        keys: LiveKeys,
        *,
        put: Put,
        announce: Callable[[LiveSegmentInfo], None],
        on_end: Callable[[str], None],
        queue_max_bytes: int,
        metrics: LiveMetrics,
        drain_s: float = END_DRAIN_S,
    ) -> None:
        """`announce` publishes a segment; `on_end(reason)` follows the last piece (on this thread)."""
        self._keys, self._put, self._announce, self._on_end = keys, put, announce, on_end
        self._max_bytes, self._metrics, self._drain_s = queue_max_bytes, metrics, drain_s
        self._cond = threading.Condition()
        self._waiting: deque[Item] = deque()
        self._waiting_bytes = 0
        self._reason: str | None = None
        self._drain_until = float("inf")
        self._sequence = 0
        self.thread = threading.Thread(target=self._run, name=f"live-up-{keys.session_id}", daemon=True)

    def add(self, item: Item) -> None:
        """From the feed, in order; drops the oldest waiting segments beyond the bound."""
        with self._cond:
            self._waiting.append(item)
            self._waiting_bytes += len(item.data)
            while self._waiting_bytes > self._max_bytes and self._drop_oldest():
                pass
            self._cond.notify_all()

    def finish(self, reason: str) -> None:
        """No more pieces: deliver what waits (for END_DRAIN_S at most), then end with `reason`."""
        with self._cond:
            if self._reason is None:
                self._reason = reason
                self._drain_until = time.monotonic() + self._drain_s
            self._cond.notify_all()

    def _drop_oldest(self) -> bool:
        """Drop the oldest waiting segment; the next one then follows a gap. False if none waits."""
        index = next((i for i, it in enumerate(self._waiting) if isinstance(it, SegmentItem)), None)
        if index is None:
            return False
        dropped = self._waiting[index]
        del self._waiting[index]
        self._waiting_bytes -= len(dropped.data)
        self._metrics.segments.labels("failed").inc()
        for later in range(index, len(self._waiting)):
            segment = self._waiting[later]
            if isinstance(segment, SegmentItem):
                self._waiting[later] = replace(segment, discontinuity=True)
                break
        log.warning("live %s: S3 behind, a waiting segment dropped", self._keys.session_id)
        return True

    def _run(self) -> None:
        try:
            while (item := self._next()) is not None:
                if not self._deliver(item):
                    self._give_up()
                    break
        except Exception:  # a bug must still end the session with an answer
            log.exception("live %s: delivery failed", self._keys.session_id)
        finally:
            self._on_end(self._reason or "shutdown")

    def _next(self) -> Item | None:
        with self._cond:
            while not self._waiting and self._reason is None:
                self._cond.wait()
            if not self._waiting:
                return None
            item = self._waiting.popleft()
            self._waiting_bytes -= len(item.data)
            return item

    def _deliver(self, item: Item) -> bool:
        """Upload `item` (retrying while S3 is unreachable) and announce a segment; False: gave up."""
        if isinstance(item, InitItem):
            return self._upload(self._keys.init(item.number), item.data, "video/mp4")
        key = self._keys.segment(self._sequence)
        began = time.monotonic()
        if not self._upload(key, item.data, "video/iso.segment"):
            self._metrics.segments.labels("failed").inc()
            return False
        self._metrics.upload_seconds.observe(time.monotonic() - began)
        self._metrics.segments.labels("uploaded").inc()
        self._announce(LiveSegmentInfo(
            sequence=self._sequence, object_key=key, init_key=self._keys.init(item.init_number),
            started_at=datetime.fromtimestamp(item.started_at, UTC), duration_s=item.duration_s,
            size_bytes=len(item.data), discontinuity=item.discontinuity,
        ))  # fmt: skip
        self._sequence += 1
        return True

    def _upload(self, key: str, body: bytes, content_type: str) -> bool:
        attempt = 0
        while True:
            try:
                self._put(key, body, content_type)
            except UploadError as exc:
                if attempt == 0:
                    log.warning("live %s: upload of %s failed, retrying: %s", self._keys.session_id, key, exc)
                deadline = time.monotonic() + full_jitter(RETRY_BASE_S, RETRY_MAX_S, attempt)
                attempt += 1
                with self._cond:  # new pieces notify: wait out the delay anyway, unless the end cuts it
                    while (now := time.monotonic()) < deadline:
                        if deadline > self._drain_until:
                            return False
                        self._cond.wait(deadline - now)
            else:
                return True

    def _give_up(self) -> None:
        with self._cond:
            dropped = sum(1 for item in self._waiting if isinstance(item, SegmentItem))
            self._waiting.clear()
            self._waiting_bytes = 0
        self._metrics.segments.labels("failed").inc(dropped)
        log.warning("live %s: S3 unreachable at the end; %d segments not delivered", self._keys.session_id,
                    dropped + 1)  # fmt: skip
