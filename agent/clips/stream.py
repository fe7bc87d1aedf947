"""What flows from a camera's RTSP session to its captures: stream facts, frames' wall clock, the end marker.

Wall clock of a packet: ``start_time_realtime`` (camera clock at pts 0, from the first RTCP sender report)
+ pts x time_base - ``clock_offset_s`` (camera minus ours). Before any SR (or from a camera that sends
none) it is our receive clock instead: the earliest ``received - pts x time_base`` seen, which is the
stream's epoch plus the smallest network delay.
"""

from __future__ import annotations

import queue
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal

import av

from agent.clips.writer import Frame

# Expected PyAV failures of an RTSP input: refused, bad credentials, timeouts, garbage, camera gone.
STREAM_ERRORS = (av.error.FFmpegError, OSError, TimeoutError, ValueError)
_URL = re.compile(r"rtsps?://\S+", re.IGNORECASE)


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
        epoch = frame.received - float(pts_of(frame) * self.time_base)
        if self._local_epoch is None or epoch < self._local_epoch:
            self._local_epoch = epoch

    def wall(self, frame: Frame) -> float:
        media = float(pts_of(frame) * self.time_base)
        if self.realtime_us is not None:
            return self.realtime_us / 1e6 + media - (self.clock_offset_s or 0.0)
        return (self._local_epoch if self._local_epoch is not None else frame.received) + media


def pts_of(frame: Frame) -> int:
    value = frame.pts if frame.pts is not None else frame.dts
    return value or 0


class Subscriber:
    """A capture's view of a session: frames in arrival order, then one EndOfStream."""

    def __init__(self) -> None:
        self.items: queue.SimpleQueue[Item] = queue.SimpleQueue()


def describe_error(exc: BaseException) -> str:
    """One line without the camera URL (FFmpeg errors quote it, credentials included)."""
    return _URL.sub("<camera>", f"{type(exc).__name__}: {exc}").replace("\n", " ")[:200]


def to_utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
