"""One live session's reader: follows the camera's stream in the shared RTSP session pool (no connection of
its own: agent/clips/session.py), cuts it into segments (segmenter.py) and hands them to its Delivery in
order, until the session is stopped or fails.

It starts at the newest keyframe the session holds, so the first segment is out about one GOP after the
start. When the input is lost, the pool reopens it (its backoff); the segments after that have a new init
segment and the first says `discontinuity`. A camera lost for `camera_lost_s` ends the session with
`camera_lost`; keyframes further apart than `max_segment_s` (or none) with `no_keyframe`. While it runs, the
camera's main-stream pre-roll is kept armed (`arm`), for a "save this range" clip request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.clips.session import Session, SessionPool
from agent.clips.stream import STREAM_ERRORS, EndOfStream, Gap, Subscriber, describe_error
from agent.clips.writer import Frame
from agent.live.delivery import Delivery, InitItem, SegmentItem
from agent.live.segmenter import InitPiece, Piece, Segmenter
from agent.live.settings import LiveSettings

log = logging.getLogger(__name__)

ARM_EVERY_S = 5.0  # the pre-roll arm is renewed at most this often (an arm may open the main stream)
FLOWING_S = 1.0  # frames seen this recently: the stream flows (a stall is the pool's read timeout's job)
REFOLLOW_MAX_S = 5.0
POLL_S = 0.2


@dataclass(frozen=True)
class FeedTarget:
    camera_id: str
    stream: str  # the pool's stream key: "main", or "sub" when it is another URL
    url: str = field(repr=False)  # carries credentials: never leaves the agent
    clock_offset_s: float | None
    arm: Callable[[float], None]  # keep the main-stream pre-roll for this many seconds from now


class Feed:
    def __init__(
        self,
        session_id: str,
        pool: SessionPool,
        target: FeedTarget,
        settings: LiveSettings,
        delivery: Delivery,
    ) -> None:
        self._id, self._pool, self._target, self._settings = session_id, pool, target, settings
        self._delivery = delivery
        self._stop = threading.Event()
        self._reason: str | None = None
        self._segmenter: Segmenter | None = None
        self._init_number = -1
        self._discontinuity = False
        now = time.monotonic()
        self._last_key_at, self._last_frame_at = now, float("-inf")
        self._lost_since: float | None = None
        self._armed_at = float("-inf")
        self.thread = threading.Thread(target=self._run, name=f"live-{session_id}", daemon=True)

    def stop(self, reason: str) -> None:
        """End the session (from any thread); the first reason given is the one reported."""
        if self._reason is None:
            self._reason = reason
        self._stop.set()

    def _run(self) -> None:
        reason = "camera_lost"
        try:
            reason = self._follow()
        except Exception:  # a bug must not leave the session without an end
            log.exception("live %s: feed failed", self._id)
        finally:
            self._end_input()
            self._delivery.finish(reason)

    def _follow(self) -> str:
        """Follow the stream, re-joining the pool after a session ended, until stopped or failed."""
        self._arm()
        delay = 0.5
        while not self._stop.is_set():
            subscriber = Subscriber()
            t = self._target
            joined = self._pool.follow(t.camera_id, t.stream, t.url, subscriber, t.clock_offset_s)
            if joined is not None:
                session, backlog = joined
                try:
                    outcome = self._consume(session, subscriber, backlog)
                finally:
                    session.unsubscribe(subscriber)
                if outcome is not None:
                    return outcome
            if self._pool.closed.is_set():
                return "shutdown"
            self._lost("no RTSP session" if joined is None else "session ended")
            if self._lost_too_long():
                return "camera_lost"
            self._stop.wait(delay)
            delay = min(2 * delay, REFOLLOW_MAX_S)
        return self._reason or "shutdown"

    def _consume(self, session: Session, subscriber: Subscriber, backlog: list[Frame]) -> str | None:
        """Frames until stopped or failed (the reason), or the pool's session ends (None)."""
        keys = [i for i, frame in enumerate(backlog) if frame.keyframe]
        for frame in backlog[keys[-1] :] if keys else []:  # live starts at the newest keyframe
            self._take(session, frame)
        while not self._stop.is_set():
            failure = self._failure()
            if failure is not None:
                return failure
            try:
                item = subscriber.items.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, EndOfStream):
                self._lost(item.error)
                if not isinstance(item, Gap):
                    return None
                continue
            self._take(session, item)
        return self._reason or "shutdown"

    def _take(self, session: Session, frame: Frame) -> None:
        now = time.monotonic()
        self._last_frame_at, self._lost_since = now, None
        if frame.keyframe:
            self._last_key_at = now
        if self._segmenter is None:
            if not frame.keyframe:
                return
            info, clock = session.stream()  # of the input this frame comes from
            self._segmenter = Segmenter(info, clock, self._settings.min_segment_s)
            self._init_number += 1
        try:
            pieces = self._segmenter.push(frame)
        except STREAM_ERRORS as exc:  # the muxer refused the input: start again at the next keyframe
            log.warning("live %s: segmenting failed: %s", self._id, describe_error(exc))
            self._lost("segmenting failed")
            return
        self._emit(pieces)

    def _emit(self, pieces: list[Piece]) -> None:
        for piece in pieces:
            if isinstance(piece, InitPiece):
                self._delivery.add(InitItem(self._init_number, piece.data))
                continue
            self._delivery.add(SegmentItem(
                self._init_number, piece.data, piece.started_at, piece.duration_s, self._discontinuity
            ))  # fmt: skip
            self._discontinuity = False
            self._arm()

    def _lost(self, error: str) -> None:
        """The input is gone (a reopen follows): close the segments of this input; the next starts anew."""
        if self._lost_since is None:
            log.info("live %s: camera %s stream lost (%s)", self._id, self._target.camera_id, error)
            self._lost_since = time.monotonic()
        self._end_input()
        self._last_key_at = time.monotonic()

    def _end_input(self) -> None:
        segmenter, self._segmenter = self._segmenter, None
        if segmenter is None:
            return
        try:
            self._emit(segmenter.close())
        except STREAM_ERRORS as exc:
            log.warning("live %s: closing the last segment failed: %s", self._id, describe_error(exc))
        self._discontinuity = True  # whatever comes next follows a gap, with a new init segment

    def _failure(self) -> str | None:
        now = time.monotonic()
        if self._lost_too_long():
            return "camera_lost"
        flowing = now - self._last_frame_at < FLOWING_S
        if flowing and now - self._last_key_at > self._settings.max_segment_s:
            return "no_keyframe"
        return None

    def _lost_too_long(self) -> bool:
        lost = self._lost_since
        return lost is not None and time.monotonic() - lost > self._settings.camera_lost_s

    def _arm(self) -> None:
        now = time.monotonic()
        if now - self._armed_at >= ARM_EVERY_S:
            self._armed_at = now
            self._target.arm(self._settings.save_grace_s + ARM_EVERY_S)
