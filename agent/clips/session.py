"""Shared RTSP sessions per camera with a pre-roll ring buffer, and captures of wall-clock windows from them.

One reader thread per camera pulls packets from one RTSP input (PyAV, TCP, stream copy: no decoding) and
hands copies to every capture of that camera and to its ring buffer. The buffer always keeps the current
GOP (so a new capture starts at once from the last keyframe); while the camera is armed it keeps whole GOPs
back to ``preroll_max_s`` / ``preroll_max_bytes``, so a window that began before the request is served.
A session ends when no capture needs it and its arm has expired (closing the input sends TEARDOWN).

Wall clock of a packet: ``start_time_realtime`` (camera clock at pts 0, from the first RTCP sender report)
+ pts x time_base - ``clock_offset_s`` (camera minus ours). Before any SR (or from a camera that sends
none) it is our receive clock instead: the earliest ``received - pts x time_base`` seen, which is the
stream's epoch plus the smallest network delay.
"""

from __future__ import annotations

import io
import logging
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av

from agent.clips.thumbnail import keyframe_jpeg
from agent.clips.writer import FragmentedMp4Writer, Frame

log = logging.getLogger(__name__)

# Expected PyAV failures of an RTSP input: refused, bad credentials, timeouts, garbage, camera gone.
STREAM_ERRORS = (av.error.FFmpegError, OSError, TimeoutError, ValueError)
RETRY_MAX_S = 10.0
_URL = re.compile(r"rtsps?://\S+", re.IGNORECASE)


@dataclass(frozen=True)
class CaptureResult:
    """What a capture wrote. Times are UTC on our clock; ``sha256`` is "" and ``size_bytes`` 0 if no file."""

    covered_start: datetime | None  # wall clock of the first frame written
    covered_end: datetime | None  # wall clock of the end of the last frame written
    wallclock_source: Literal["rtcp", "local"]  # rtcp: camera SR corrected by clock_offset_s; local: ours
    size_bytes: int
    sha256: str  # of the file as written (computed while writing)
    codec: str
    width: int
    height: int
    thumbnail_jpeg: bytes | None  # from the first keyframe
    complete: bool  # the whole requested window was covered
    error: str | None

    @classmethod
    def failed(cls, error: str) -> CaptureResult:
        return cls(None, None, "local", 0, "", "", 0, 0, None, False, error)


@dataclass(frozen=True)
class StreamInfo:
    """What captures need of the input stream (``template`` is PyAV's stream, for the muxer)."""

    template: Any
    codec: str
    width: int
    height: int
    time_base: Fraction
    extradata: bytes | None
    frame_s: float  # one frame's duration


@dataclass(frozen=True)
class EndOfStream:
    error: str


Item = Frame | EndOfStream


class WallClock:
    """Maps a packet's pts to our wall clock (epoch seconds), from RTCP or from receive times."""

    def __init__(self, time_base: Fraction, clock_offset_s: float | None) -> None:
        self.time_base = time_base
        self.clock_offset_s = clock_offset_s
        self.realtime_us: int | None = None
        self._local_epoch: float | None = None

    @property
    def source(self) -> Literal["rtcp", "local"]:
        return "rtcp" if self.realtime_us is not None else "local"

    def observe(self, frame: Frame, realtime_us: int | None) -> None:
        if realtime_us and self.realtime_us is None:
            self.realtime_us = realtime_us
        epoch = frame.received - float(_pts(frame) * self.time_base)
        if self._local_epoch is None or epoch < self._local_epoch:
            self._local_epoch = epoch

    def wall(self, frame: Frame) -> float:
        media = float(_pts(frame) * self.time_base)
        if self.realtime_us is not None:
            return self.realtime_us / 1e6 + media - (self.clock_offset_s or 0.0)
        return (self._local_epoch if self._local_epoch is not None else frame.received) + media


def _pts(frame: Frame) -> int:
    value = frame.pts if frame.pts is not None else frame.dts
    return value or 0


class Subscriber:
    """A capture's view of a session: frames in arrival order, then one EndOfStream."""

    def __init__(self) -> None:
        self.items: queue.SimpleQueue[Item] = queue.SimpleQueue()


class Session:
    """One camera's RTSP input and its reader thread (see the module docstring)."""

    def __init__(self, pool: SessionPool, camera_id: str, url: str, clock_offset_s: float | None) -> None:
        self.pool, self.camera_id, self.url = pool, camera_id, url
        self.clock_offset_s = clock_offset_s
        self.lock = threading.Lock()
        self.info: StreamInfo | None = None
        self.clock: WallClock | None = None
        self.error = ""
        self.subscribers: set[Subscriber] = set()
        self.armed_until = 0.0  # time.monotonic()
        self.gops: deque[list[Frame]] = deque()
        self.buffer_bytes = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"rtsp-{camera_id}", daemon=True)

    # -- used by the pool and by captures --------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> list[Frame] | None:
        """Join; returns the buffered frames (live ones follow in the queue), or None if the session ends."""
        with self.lock:
            if self.stopping:
                return None
            self.subscribers.add(subscriber)
            return [frame for gop in self.gops for frame in gop]

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self.lock:
            self.subscribers.discard(subscriber)

    def arm(self, duration_s: float) -> bool:
        with self.lock:
            if self.stopping:
                return False
            self.armed_until = max(self.armed_until, time.monotonic() + duration_s)
            return True

    def earliest_buffered(self) -> datetime | None:
        with self.lock:
            if not self.gops or self.clock is None:
                return None
            return _utc(self.clock.wall(self.gops[0][0]))

    def stream(self) -> tuple[StreamInfo, WallClock]:
        """The input's description and clock, for frames delivered since the last (re)open."""
        with self.lock:
            assert self.info is not None and self.clock is not None
            return self.info, self.clock

    # -- reader thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        delay = 1.0
        try:
            while not self.pool.closed.is_set():
                error = self._stream_once()
                self._end_subscribers(error)
                if not self._keep_going():
                    break
                log.info("camera %s: stream lost (%s), reopening in %.0f s", self.camera_id, error, delay)
                if self.pool.closed.wait(delay):
                    break
                delay = min(delay * 2, RETRY_MAX_S)
        finally:
            with self.lock:
                self.stopping = True
            self._end_subscribers(self.error or "session closed")
            self.pool.forget(self)

    def _stream_once(self) -> str:
        """Open the input and pump packets until it fails or nobody needs it; returns why it ended."""
        try:
            # FFmpeg's own RTSP socket timeout (rtsp_options) bounds both the open and a stalled stream.
            # PyAV's `timeout=` would add a Python interrupt callback that FFmpeg calls constantly: measured
            # at about 0.5% of a core per 1080p stream, a third of the whole capture cost.
            container = av.open(self.url, options=self.pool.rtsp_options())
        except STREAM_ERRORS as exc:
            self.error = f"open failed: {_describe(exc)}"
            return self.error
        try:
            return self._pump(container)
        except STREAM_ERRORS as exc:
            self.error = f"stream lost: {_describe(exc)}"
            return self.error
        finally:
            container.close()  # sends TEARDOWN

    def _pump(self, container: Any) -> str:
        stream = container.streams.video[0]
        self._set_info(stream)
        step = max(1, round(1 / (self.info.frame_s * stream.time_base))) if self.info else 1
        last: int | None = None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            pts, dts = packet.pts, packet.dts
            if pts is None and dts is None:
                # FFmpeg's RTSP demuxer hands out the first (probed) keyframe without timestamps; RTP
                # timestamps count from that packet, so it is 0 (or one frame after the previous one).
                pts = dts = 0 if last is None else last + step
            last = dts if dts is not None else pts
            frame = Frame(bytes(packet), pts, dts, packet.duration or 0, packet.is_keyframe, time.time())
            if not self._deliver(frame, container.start_time_realtime):
                return "pool closed" if self.pool.closed.is_set() else ""
        self.error = "stream ended"
        return self.error

    def _set_info(self, stream: Any) -> None:
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or 25
        # Captures build their output stream from a copy owned by a never-written container: the input's
        # own stream is freed when the reader closes it, possibly while a capture still reads it.
        holder = av.open(io.BytesIO(), "w", format="mp4")
        template = holder.add_stream_from_template(stream)
        frame_s = float(1 / rate)
        info = StreamInfo(template, cc.name, cc.width, cc.height, stream.time_base, cc.extradata, frame_s)
        with self.lock:
            self.info, self.error = info, ""
            self.clock = WallClock(stream.time_base, self.clock_offset_s)
            self.gops.clear()
            self.buffer_bytes = 0

    def _deliver(self, frame: Frame, realtime_us: int | None) -> bool:
        """Buffer and fan out one frame; False when the session should end (idle and unarmed)."""
        with self.lock:
            assert self.clock is not None
            self.clock.observe(frame, realtime_us)
            self._buffer(frame)
            for subscriber in self.subscribers:
                subscriber.items.put(frame)
            if self.subscribers or time.monotonic() < self.armed_until or self.pool.closed.is_set():
                return not self.pool.closed.is_set()
            self.stopping = True
            return False

    def _buffer(self, frame: Frame) -> None:
        if frame.keyframe:
            self.gops.append([])
        elif not self.gops:
            return  # joined mid-GOP: the buffer starts at a keyframe
        self.gops[-1].append(frame)
        self.buffer_bytes += len(frame.data)
        armed = time.monotonic() < self.armed_until
        while len(self.gops) > 1 and (not armed or self._over_budget()):
            self.buffer_bytes -= sum(len(f.data) for f in self.gops.popleft())

    def _over_budget(self) -> bool:
        assert self.clock is not None
        span = float((_pts(self.gops[-1][-1]) - _pts(self.gops[0][0])) * self.clock.time_base)
        return span > self.pool.preroll_max_s or self.buffer_bytes > self.pool.preroll_max_bytes

    def _keep_going(self) -> bool:
        """After a failure: reopen while armed (captures in progress were told and have ended)."""
        with self.lock:
            if self.pool.closed.is_set() or time.monotonic() >= self.armed_until or self.info is None:
                self.stopping = True
                return False
            self.gops.clear()  # timestamps restart on a new input: old GOPs cannot be joined to new ones
            self.buffer_bytes = 0
            return True

    def _end_subscribers(self, error: str) -> None:
        with self.lock:
            for subscriber in self.subscribers:
                subscriber.items.put(EndOfStream(error))
            self.subscribers.clear()


class SessionPool:
    """RTSP sessions by camera id, shared by captures and pre-roll arms. Thread-safe; ``close`` at the end."""

    def __init__(
        self,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        max_sessions: int = 32,
        preroll_max_s: float = 120.0,
        preroll_max_bytes: int = 256 * 2**20,
    ) -> None:
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.max_sessions = max_sessions
        self.preroll_max_s, self.preroll_max_bytes = preroll_max_s, preroll_max_bytes
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def rtsp_options(self) -> dict[str, str]:
        # analyzeduration 0 + small probesize: the first keyframe in ~0.1 s instead of ~2 s (FACTS.md).
        return {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32768",
                "timeout": str(int(max(self.open_timeout_s, self.read_timeout_s) * 1e6))}  # fmt: skip

    def arm(self, camera_id: str, url: str, duration_s: float, clock_offset_s: float | None = None) -> None:
        """Keep a pre-roll buffer of ``camera_id`` for ``duration_s`` from now (extends an earlier arm).

        Sessions are per camera id: a live session keeps the URL it was opened with."""
        for _ in range(0 if self.closed.is_set() else 3):
            session = self._session(camera_id, url, clock_offset_s)
            if session is None or session.arm(duration_s):
                return

    def earliest_buffered(self, camera_id: str) -> datetime | None:
        """Wall clock (UTC, ours) of the oldest buffered keyframe of ``camera_id``, if any."""
        with self._lock:
            session = self._sessions.get(camera_id)
        return session.earliest_buffered() if session is not None else None

    def capture(
        self,
        camera_id: str,
        url: str,
        start: datetime,
        end: datetime,
        out_path: Path,
        *,
        clock_offset_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> CaptureResult:
        """Write [start, end) of ``camera_id`` to ``out_path`` (fragmented MP4); blocks until done."""
        if end <= start:
            return CaptureResult.failed("end must be after start")
        if self.closed.is_set():
            return CaptureResult.failed("session pool closed")
        subscriber = Subscriber()
        for _ in range(3):
            session = self._session(camera_id, url, clock_offset_s)
            if session is None:
                return CaptureResult.failed(f"too many RTSP sessions (max {self.max_sessions})")
            backlog = session.subscribe(subscriber)
            if backlog is not None:
                break
        else:
            return CaptureResult.failed("session kept closing")
        try:
            job = _Capture(
                session, subscriber, start=start, end=end, out_path=out_path, cancel=cancel,
                data_timeout_s=self._data_timeout_s(),
            )  # fmt: skip
            return job.run(backlog)
        finally:
            session.unsubscribe(subscriber)

    def close(self) -> None:
        """End every session (captures in progress end with an error) and wait for the readers."""
        self.closed.set()
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.thread.join(self.open_timeout_s + self.read_timeout_s + 1)

    # -- internals --------------------------------------------------------------------------------------
    def _data_timeout_s(self) -> float:
        """How long a capture waits for the next packet before giving up on the reader (belt and braces)."""
        return self.open_timeout_s + 2 * self.read_timeout_s + 2

    def _session(self, camera_id: str, url: str, clock_offset_s: float | None) -> Session | None:
        with self._lock:
            session = self._sessions.get(camera_id)
            if session is not None and not session.stopping:
                if clock_offset_s is not None:
                    session.clock_offset_s = clock_offset_s
                    if session.clock is not None:
                        session.clock.clock_offset_s = clock_offset_s
                return session
            if len(self._sessions) >= self.max_sessions and session is None:
                log.warning("camera %s: no RTSP session, %d already open", camera_id, len(self._sessions))
                return None
            session = Session(self, camera_id, url, clock_offset_s)
            self._sessions[camera_id] = session
        session.thread.start()
        return session

    def forget(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session.camera_id) is session:
                del self._sessions[session.camera_id]

    def sessions(self) -> int:
        with self._lock:
            return len(self._sessions)


class _Capture:
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
        self.stream: tuple[StreamInfo, WallClock] | None = None  # of the input our frames come from
        self.pending: list[Frame] = []  # the GOP we would start with, while waiting for ``start``
        self.writer: FragmentedMp4Writer | None = None
        self.first: Frame | None = None
        self.last: Frame | None = None
        self.reached_end = False
        self.error: str | None = None

    def run(self, backlog: list[Frame]) -> CaptureResult:
        try:
            if not any(self._take(frame) for frame in backlog):
                self._follow()
        except STREAM_ERRORS as exc:  # the muxer or the disk failed
            self.error = f"write failed: {_describe(exc)}"
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
            self.reached_end = True
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
        start = clock.wall(first)  # with the final clock: an SR may have come meanwhile
        end = clock.wall(last) + self._duration_s(last)
        complete = self.reached_end and self.error is None and start <= self.start + info.frame_s / 2
        thumbnail = keyframe_jpeg(info.codec, info.extradata, first.data)
        return CaptureResult(
            _utc(start), _utc(end), clock.source, writer.size_bytes, writer.sha256, info.codec, info.width,
            info.height, thumbnail, complete, self.error,
        )  # fmt: skip


def _describe(exc: BaseException) -> str:
    """One line without the camera URL (FFmpeg errors quote it, credentials included)."""
    return _URL.sub("<camera>", f"{type(exc).__name__}: {exc}").replace("\n", " ")[:200]


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
