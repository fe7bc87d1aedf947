"""What flows from a camera's RTSP session to its captures: stream facts, frames' wall clock, the end marker.

Wall clock of a packet, by time source:
- ``rtcp``: ``start_time_realtime`` (camera clock at pts 0, from the first RTCP sender report) + pts x
  time_base, as the camera says. Used when the ONVIF clock offset (camera minus ours) is within its own error
  (CLOCK_OFFSET_ERROR_S): the camera's clock agrees with ours as far as ONVIF can tell, and correcting it by
  a one-second-resolution reading would only add up to half a second of error to a good clock.
- ``rtcp_corrected``: the same minus ``clock_offset_s``, when the offset is larger than its error.
- ``local``: before any SR (or from a camera that sends none), our receive clock: the earliest
  ``received - pts x time_base`` seen, i.e. the stream's epoch plus the camera's smallest capture-to-arrival
  delay.
``uncertainty_s`` is how far from our clock the times can be: for ``rtcp`` the offset plus its error, for
``rtcp_corrected`` the offset's error, for ``local`` the delay above (LOCAL_DELAY_S); None when unknown
(RTCP without an ONVIF offset to check it).
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
from agent.onvif_answers import CLOCK_OFFSET_ERROR_S

# Expected PyAV failures of an RTSP input: refused, bad credentials, timeouts, garbage, camera gone.
STREAM_ERRORS = (av.error.FFmpegError, OSError, TimeoutError, ValueError)
_URL = re.compile(r"rtsps?://\S+", re.IGNORECASE)
# A camera's delay from capture to our receiving a frame (encoder, packetiser, network): typically 0.1-0.3 s.
LOCAL_DELAY_S = 0.5

_START_CODE = b"\x00\x00\x01"

TimeSource = Literal["rtcp", "rtcp_corrected", "local"]


@dataclass(frozen=True)
class InputStream:
    """The RTSP input a clip session reads, as captures need it (``template``: PyAV's stream, for muxing)."""

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


@dataclass(frozen=True)
class Gap(EndOfStream):
    """To a follower (a live view): the input was lost and is being reopened; frames after it come from a new
    input (new timestamps, new clock: ask the session for ``stream()`` again)."""


Item = Frame | EndOfStream


class WallClock:
    """Maps a packet's pts to our wall clock (epoch seconds), from RTCP or from receive times."""

    def __init__(self, time_base: Fraction, clock_offset_s: float | None) -> None:
        self.time_base = time_base
        self.clock_offset_s = clock_offset_s
        self.realtime_us: int | None = None
        self._local_epoch: float | None = None

    @property
    def source(self) -> TimeSource:
        if self.realtime_us is None:
            return "local"
        offset = self.clock_offset_s
        return "rtcp_corrected" if offset is not None and abs(offset) > CLOCK_OFFSET_ERROR_S else "rtcp"

    @property
    def uncertainty_s(self) -> float | None:
        source, offset = self.source, self.clock_offset_s
        if source == "local":
            return LOCAL_DELAY_S
        if offset is None:
            return None  # the camera's clock was never compared with ours
        return round(CLOCK_OFFSET_ERROR_S + (abs(offset) if source == "rtcp" else 0.0), 3)

    def observe(self, frame: Frame, realtime_us: int | None) -> None:
        if realtime_us and self.realtime_us is None:
            self.realtime_us = realtime_us
        epoch = frame.received - float(pts_of(frame) * self.time_base)
        if self._local_epoch is None or epoch < self._local_epoch:
            self._local_epoch = epoch

    def wall(self, frame: Frame) -> float:
        media = float(pts_of(frame) * self.time_base)
        if self.realtime_us is None:
            return (self._local_epoch if self._local_epoch is not None else frame.received) + media
        camera = self.realtime_us / 1e6 + media
        if self.source == "rtcp_corrected" and self.clock_offset_s is not None:
            return camera - self.clock_offset_s
        return camera


def starts_picture(codec: str, data: bytes) -> bool:
    """False when the packet's first slice is not the first of its picture (Annex-B H.264 or HEVC).

    Some servers send each slice of a keyframe with the parameter sets before it, and FFmpeg's parser then
    hands out one keyframe-flagged packet per slice; only the first starts a picture. Packets with no slice
    (or not Annex-B) count as starting one.
    """
    hevc = codec == "hevc"
    at = data.find(_START_CODE)
    while at >= 0 and at + (6 if hevc else 5) <= len(data):
        header = data[at + 3]
        if hevc and (header >> 1) & 0x3F < 32:  # a slice segment: first_slice_segment_in_pic_flag
            return bool(data[at + 5] & 0x80)
        if not hevc and 1 <= header & 0x1F <= 5:  # a slice: first_mb_in_slice, ue(v), is 0 if it starts 1
            return bool(data[at + 4] & 0x80)
        at = data.find(_START_CODE, at + 3)
    return True


def pts_of(frame: Frame) -> int:
    value = frame.pts if frame.pts is not None else frame.dts
    return value or 0


class Subscriber:
    """A capture's view of a session: frames in arrival order, then one EndOfStream. A follower's view (see
    SessionPool.follow) also has a Gap wherever the input was lost and reopened."""

    def __init__(self) -> None:
        self.items: queue.SimpleQueue[Item] = queue.SimpleQueue()


def describe_error(exc: BaseException) -> str:
    """One line without the camera URL (FFmpeg errors quote it, credentials included)."""
    return _URL.sub("<camera>", f"{type(exc).__name__}: {exc}").replace("\n", " ")[:200]


def to_utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
