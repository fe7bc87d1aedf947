"""One capture: a wall-clock window of a camera's stream, written to a fragmented MP4 from the frames its
session hands over (the pre-roll backlog first, then live)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agent.clips.stream import (
    STREAM_ERRORS,
    EndOfStream,
    InputStream,
    Subscriber,
    TimeSource,
    WallClock,
    describe_error,
    to_utc,
)
from agent.clips.thumbnail import keyframe_jpeg
from agent.clips.writer import FragmentedMp4Writer, Frame

if TYPE_CHECKING:
    from agent.clips.session import Session

log = logging.getLogger(__name__)

_EPS = 1e-6  # float rounding of epoch seconds; reported times have microsecond resolution


@dataclass(frozen=True)
class CaptureResult:
    """What a capture wrote. Times are UTC on our clock; ``sha256`` is "" and ``size_bytes`` 0 if no file."""

    covered_start: datetime | None  # wall clock of the first frame written
    covered_end: datetime | None  # wall clock of the end of the last frame written
    wallclock_source: TimeSource  # how those times were found (agent/clips/stream.py)
    size_bytes: int
    sha256: str  # of the file as written (computed while writing)
    codec: str
    width: int
    height: int
    thumbnail_jpeg: bytes | None  # from the first keyframe
    complete: bool  # [covered_start, covered_end] contains the requested window
    error: str | None
    wallclock_uncertainty_s: float | None = None  # how far from our clock the times can be; None: unknown
    gaps: tuple[tuple[datetime, datetime], ...] = ()  # inside [covered_start, covered_end]: not in the clip

    @classmethod
    def failed(cls, error: str) -> CaptureResult:
        return cls(None, None, "local", 0, "", "", 0, 0, None, False, error)


class Capture:
    """One capture: from the keyframe at or before ``start``, writes every frame that begins before ``end``
    (the clip may end mid-GOP; the writer closes its last fragment)."""

    def __init__(
        self, session: Session, subscriber: Subscriber, *, start: datetime, end: datetime, out_path: Path,
        cancel: threading.Event | None, data_timeout_s: float,
    ) -> None:  # fmt: skip
        self.session, self.subscriber, self.out_path = session, subscriber, out_path
        self.start, self.end = start.timestamp(), end.timestamp()
        self.cancel = cancel or threading.Event()
        self.data_timeout_s = data_timeout_s
        self.stream: tuple[InputStream, WallClock] | None = None  # of the input our frames come from
        self.pending: list[Frame] = []  # the GOP we would start with, while waiting for ``start``
        self.writer: FragmentedMp4Writer | None = None
        self.first: Frame | None = None
        self.thumbnail: bytes | None = None
        self.last: Frame | None = None
        self.reached_end = False
        self.after_end: Frame | None = None  # the frame at or after ``end`` that closed the window
        self.error: str | None = None

    def run(self, backlog: list[Frame]) -> CaptureResult:
        try:
            if not any(self._take(frame) for frame in backlog):
                self._follow()
        except STREAM_ERRORS as exc:  # the muxer or the disk failed
            self.error = f"write failed: {describe_error(exc)}"
            log.warning("camera %s: %s", self.session.camera_id, self.error)
        finally:
            if self.writer is not None:
                self.writer.abort()
        return self._result()

    def _follow(self) -> None:
        last_item = time.monotonic()
        while not self.cancel.is_set():
            try:
                item = self.subscriber.items.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() - last_item > self.data_timeout_s:
                    self.error = "no data from the camera"
                    return
                continue
            last_item = time.monotonic()
            if isinstance(item, EndOfStream):
                self.error = item.error or "stream ended"
                return
            if self._take(item):
                return
        self.error = "cancelled"

    def _take(self, frame: Frame) -> bool:
        """Handle one frame; True when the window is done."""
        if self.stream is None:
            self.stream = self.session.stream()
        clock = self.stream[1]
        wall = clock.wall(frame)
        if self.writer is None:
            if frame.keyframe and self.pending and wall > self.start:
                # `start` fell between the last frame we hold and this keyframe: the clip begins at the
                # keyframe at or before `start`, i.e. with the GOP we hold; this frame is then taken as usual.
                self._open()
                return self._take(frame)
            if wall >= self.end:
                # Nothing of the window is left (not buffered, or the stream restarted): no clip at all
                # rather than one that shows another time than the one asked for.
                self.error = "window no longer available: the camera's buffer starts after it ended"
                return True
            if frame.keyframe:
                self.pending = [frame]
            elif self.pending:
                self.pending.append(frame)
            if self.pending and wall >= self.start:
                self._open()
            return False
        if wall >= self.end:  # any frame: waiting for the next keyframe would add up to a GOP of delay
            self.reached_end, self.after_end = True, frame
            return True
        self._write(frame)
        return False

    def _open(self) -> None:
        assert self.stream is not None
        info, clock = self.stream
        self.writer = FragmentedMp4Writer(
            self.out_path,
            info.template,
            time_base=info.time_base,
            codec=info.codec,
            wallclock_source=clock.source,
        )
        pending, self.pending = self.pending, []
        self.first = pending[0]
        # Now, not when the window ends: a 1080p decode and JPEG encode per clip would delay every result.
        self.thumbnail = keyframe_jpeg(info.codec, info.extradata, self.first.data)
        for frame in pending:
            self._write(frame)

    def _write(self, frame: Frame) -> None:
        assert self.writer is not None and self.stream is not None
        clock = self.stream[1]
        wall = clock.wall(frame)
        self.writer.wallclock_source = clock.source
        self.writer.write(frame, wall, wall + self._duration_s(frame))
        self.last = frame

    def _duration_s(self, frame: Frame) -> float:
        assert self.stream is not None
        info = self.stream[0]
        return float(frame.duration * info.time_base) if frame.duration else info.frame_s

    def _result(self) -> CaptureResult:
        if self.stream is None:
            return CaptureResult.failed(self.error or "nothing captured")
        info, clock = self.stream
        writer, first, last = self.writer, self.first, self.last
        if writer is None or first is None or last is None:
            failed = CaptureResult.failed(self.error or "nothing captured")
            return replace(failed, codec=info.codec, width=info.width, height=info.height)
        # With the final clock (an SR may have come meanwhile): the window is judged on what is reported.
        start = clock.wall(first)
        end = clock.wall(self.after_end) if self.after_end else clock.wall(last) + self._duration_s(last)
        contains = start <= self.start + _EPS and end >= self.end - _EPS
        complete = self.error is None and self.reached_end and contains
        return CaptureResult(
            to_utc(start), to_utc(end), clock.source, writer.size_bytes, writer.sha256, info.codec,
            info.width, info.height, self.thumbnail, complete, self.error, clock.uncertainty_s,
        )  # fmt: skip
