"""Shared RTSP sessions per camera with a pre-roll ring buffer, and captures of wall-clock windows from them.

One reader thread per camera pulls packets from one RTSP input (PyAV, TCP, stream copy: no decoding) and
hands copies to every capture of that camera and to its ring buffer. The buffer always keeps the current
GOP (so a new capture starts at once from the last keyframe); while the camera is armed it keeps whole GOPs
back to ``preroll_max_s`` / ``preroll_max_bytes``, so a window that began before the request is served.
A request admitted for a window in the buffer holds it (``hold``) until its capture has taken it: the
capture may wait in the queue behind others, past the arm's end and past ``preroll_max_s``; only
``preroll_max_bytes`` still bounds what is kept for it.
A session ends when no capture, hold or follower needs it and its arm has expired (closing the input sends
TEARDOWN). A follower (a live view, agent/live/) stays subscribed across a lost input: it gets a Gap and the
frames of the reopened input, and the session keeps reopening while it is followed.

Sessions are keyed by camera and stream ("main" for clips and pre-roll; a live view may follow "sub"): one
RTSP connection per stream of a camera, whoever uses it.

Frames' wall clock: agent/clips/stream.py; one capture: agent/clips/capture.py.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import av

from agent.clips.capture import Capture, CaptureResult
from agent.clips.stream import (
    STREAM_ERRORS,
    EndOfStream,
    Gap,
    InputStream,
    Subscriber,
    WallClock,
    describe_error,
    pts_of,
    starts_picture,
    to_utc,
)
from agent.clips.writer import Frame
from agent.stream_check import rtsp_open_options

log = logging.getLogger(__name__)

RETRY_MAX_S = 10.0
MAIN: Literal["main"] = "main"
SessionKey = tuple[str, str]  # (camera id, stream)


class Session:
    """One camera's RTSP input and its reader thread (see the module docstring)."""

    def __init__(self, pool: SessionPool, key: SessionKey, url: str, clock_offset_s: float | None) -> None:
        self.pool, self.key, self.url = pool, key, url
        self.camera_id = key[0]
        self.clock_offset_s = clock_offset_s
        self.lock = threading.Lock()
        self.info: InputStream | None = None
        self.clock: WallClock | None = None
        self.error = ""
        self.subscribers: set[Subscriber] = set()
        self.followers: set[Subscriber] = set()
        self.armed_until = 0.0  # time.monotonic()
        self.holds: dict[str, float] = {}  # request id -> wall clock its window starts at
        self.gops: deque[list[Frame]] = deque()
        self.buffer_bytes = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"rtsp-{key[0]}-{key[1]}", daemon=True)

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
            self.followers.discard(subscriber)

    def follow(self, subscriber: Subscriber) -> list[Frame] | None:
        """Join as a follower (see the module docstring); the buffered frames, or None if the session ends."""
        with self.lock:
            if self.stopping:
                return None
            self.followers.add(subscriber)
            return [frame for gop in self.gops for frame in gop]

    def arm(self, duration_s: float) -> bool:
        with self.lock:
            if self.stopping:
                return False
            self.armed_until = max(self.armed_until, time.monotonic() + duration_s)
            return True

    def hold(self, key: str, start: datetime) -> None:
        with self.lock:
            self.holds[key] = start.timestamp()

    def release_hold(self, key: str) -> None:
        with self.lock:
            self.holds.pop(key, None)

    def earliest_buffered(self) -> datetime | None:
        with self.lock:
            if not self.gops or self.clock is None:
                return None
            return to_utc(self.clock.wall(self.gops[0][0]))

    def stream(self) -> tuple[InputStream, WallClock]:
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
                if not self._keep_going(error):
                    break
                self._end_subscribers(error, gap=True)
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
            # FFmpeg's own RTSP socket timeout bounds both the open and a stalled stream.
            # PyAV's `timeout=` would add a Python interrupt callback that FFmpeg calls constantly: measured
            # at about 0.5% of a core per 1080p stream, a third of the whole capture cost.
            timeout_s = max(self.pool.open_timeout_s, self.pool.read_timeout_s)
            container = av.open(self.url, options=rtsp_open_options(timeout_s))
        except STREAM_ERRORS as exc:
            self.error = f"open failed: {describe_error(exc)}"
            return self.error
        try:
            return self._pump(container)
        except STREAM_ERRORS as exc:
            self.error = f"stream lost: {describe_error(exc)}"
            return self.error
        finally:
            container.close()  # sends TEARDOWN

    def _pump(self, container: Any) -> str:
        """Hand out one Frame per picture: a packet that continues the picture before it (another slice of
        it) is appended to it, so a frame is delivered when the next picture's first packet arrives."""
        stream = container.streams.video[0]
        self._set_info(stream)
        step = max(1, round(1 / (self.info.frame_s * stream.time_base))) if self.info else 1
        codec = stream.codec_context.name
        last: int | None = None
        picture: Frame | None = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                data = bytes(packet)
                if picture is not None and not starts_picture(codec, data):
                    picture = replace(picture, data=picture.data + data)
                    continue
                if picture is not None and not self._deliver(picture, container.start_time_realtime):
                    picture = None
                    return "pool closed" if self.pool.closed.is_set() else ""
                pts, dts = packet.pts, packet.dts
                if pts is None and dts is None:
                    # FFmpeg's RTSP demuxer hands out the first (probed) keyframe without timestamps; RTP
                    # timestamps count from that packet, so it is 0 (or one frame after the previous one).
                    pts = dts = 0 if last is None else last + step
                last = dts if dts is not None else pts
                picture = Frame(data, pts, dts, packet.duration or 0, packet.is_keyframe, time.time())
            self.error = "stream ended"
            return self.error
        finally:
            if picture is not None:  # the stream ended or failed: the last picture is all there is of it
                self._deliver(picture, container.start_time_realtime)

    def _set_info(self, stream: Any) -> None:
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or 25
        # Captures build their output stream from a copy owned by a never-written container: the input's
        # own stream is freed when the reader closes it, possibly while a capture still reads it.
        holder = av.open(io.BytesIO(), "w", format="mp4")
        template = holder.add_stream_from_template(stream)
        frame_s = float(1 / rate)
        info = InputStream(template, cc.name, cc.width, cc.height, stream.time_base, cc.extradata, frame_s)
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
            for subscriber in (*self.subscribers, *self.followers):
                subscriber.items.put(frame)
            if self.subscribers or self.followers or self._needed() or self.pool.closed.is_set():
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
        needed = self._needed()
        while len(self.gops) > 1 and (not needed or self._over_budget()):
            self.buffer_bytes -= sum(len(f.data) for f in self.gops.popleft())

    def _needed(self) -> bool:
        """Whether the pre-roll is kept: the camera is armed or an admitted request holds its window."""
        return time.monotonic() < self.armed_until or bool(self.holds)

    def _over_budget(self) -> bool:
        """Whether the oldest GOP goes: over the byte budget, or over the time budget and no hold needs it
        (a hold needs the last GOP that starts at or before its window)."""
        assert self.clock is not None
        if self.buffer_bytes > self.pool.preroll_max_bytes:
            return True
        if self._span_s() <= self.pool.preroll_max_s:
            return False
        held = min(self.holds.values(), default=None)
        return held is None or self.clock.wall(self.gops[1][0]) <= held

    def _span_s(self) -> float:
        """Media time from the oldest buffered frame to the newest."""
        assert self.clock is not None
        return float((pts_of(self.gops[-1][-1]) - pts_of(self.gops[0][0])) * self.clock.time_base)

    def _keep_going(self, error: str) -> bool:
        """After a failure: reopen while armed, held or followed (captures in progress are told and end)."""
        with self.lock:
            needed = self._needed() or bool(self.followers)
            if self.pool.closed.is_set() or not needed or self.info is None:
                self.stopping = True
                return False
            if len(self.gops) > 1:  # more than the live GOP: a pre-roll is lost
                span_s = self._span_s()
                log.warning("camera %s: pre-roll of %.1f s discarded (%s)", self.camera_id, span_s, error)
            self.gops.clear()  # timestamps restart on a new input: old GOPs cannot be joined to new ones
            self.buffer_bytes = 0
            return True

    def _end_subscribers(self, error: str, *, gap: bool = False) -> None:
        """Captures end; followers get a Gap if the input is reopened (`gap`), else the end too."""
        with self.lock:
            for subscriber in self.subscribers:
                subscriber.items.put(EndOfStream(error))
            self.subscribers.clear()
            for follower in self.followers:
                follower.items.put(Gap(error) if gap else EndOfStream(error))
            if not gap:
                self.followers.clear()


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
        self._sessions: dict[SessionKey, Session] = {}

    def arm(self, camera_id: str, url: str, duration_s: float, clock_offset_s: float | None = None) -> None:
        """Keep a pre-roll buffer of ``camera_id`` for ``duration_s`` from now (extends an earlier arm).

        Sessions are per camera and stream: a running session keeps the URL it was opened with."""
        for _ in range(0 if self.closed.is_set() else 3):
            session = self._session((camera_id, MAIN), url, clock_offset_s)
            if session is None or session.arm(duration_s):
                return

    def earliest_buffered(self, camera_id: str) -> datetime | None:
        """Wall clock (UTC, ours) of the oldest buffered keyframe of ``camera_id``, if any."""
        session = self._live(camera_id)
        return session.earliest_buffered() if session is not None else None

    def hold(self, camera_id: str, key: str, start: datetime) -> None:
        """Keep ``camera_id``'s buffer from ``start`` on (and its session open) until ``release_hold(key)``:
        for an admitted request whose window is buffered, while its capture waits for a worker."""
        session = self._live(camera_id)
        if session is not None:
            session.hold(key, start)

    def release_hold(self, camera_id: str, key: str) -> None:
        session = self._live(camera_id)
        if session is not None:
            session.release_hold(key)

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
            session = self._session((camera_id, MAIN), url, clock_offset_s)
            if session is None:
                return CaptureResult.failed(f"too many RTSP sessions (max {self.max_sessions})")
            backlog = session.subscribe(subscriber)
            if backlog is not None:
                break
        else:
            return CaptureResult.failed("session kept closing")
        try:
            job = Capture(
                session, subscriber, start=start, end=end, out_path=out_path, cancel=cancel,
                data_timeout_s=self._data_timeout_s(),
            )  # fmt: skip
            return job.run(backlog)
        finally:
            session.unsubscribe(subscriber)

    def follow(
        self,
        camera_id: str,
        stream: str,
        url: str,
        subscriber: Subscriber,
        clock_offset_s: float | None = None,
    ) -> tuple[Session, list[Frame]] | None:
        """Follow ``stream`` of ``camera_id`` (a live view): the session and its buffered frames; None if no
        session can be had (pool closed or full). ``unfollow`` when done."""
        for _ in range(0 if self.closed.is_set() else 3):
            session = self._session((camera_id, stream), url, clock_offset_s)
            if session is None:
                return None
            backlog = session.follow(subscriber)
            if backlog is not None:
                return session, backlog
        return None

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

    def _session(self, key: SessionKey, url: str, clock_offset_s: float | None) -> Session | None:
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and not session.stopping:
                if clock_offset_s is not None:
                    session.clock_offset_s = clock_offset_s
                    if session.clock is not None:
                        session.clock.clock_offset_s = clock_offset_s
                return session
            if len(self._sessions) >= self.max_sessions and session is None:
                log.warning("camera %s: no RTSP session, %d already open", key[0], len(self._sessions))
                return None
            session = Session(self, key, url, clock_offset_s)
            self._sessions[key] = session
        session.thread.start()
        return session

    def _live(self, camera_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get((camera_id, MAIN))

    def forget(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session.key) is session:
                del self._sessions[session.key]

    def sessions(self) -> int:
        with self._lock:
            return len(self._sessions)
