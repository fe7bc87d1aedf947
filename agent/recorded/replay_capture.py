"""A recorded window written as a clip: the replay's access units stream-copied into the same fragmented MP4
as live clips (agent/clips/writer.py), on the recorded time base, with the recording's gaps kept and reported.

Times: each frame's recorded time comes from the ONVIF replay header extension (the recorder's clock);
media timestamps are recorded time minus the first frame's, so a gap stays a gap in the file's timeline too
(never papered over). What is refused, so that a clip never shows another time than the one asked:
- a replay whose first keyframe lies after the window's end, or more than MAX_LEAD_S before its start (the
  recorder played another time): no clip;
- frames without a recorded time (no replay header extension): no clip, the time cannot be proven;
- recorded times that go backwards: the clip ends there (partial).
A gap is a jump between consecutive frames' recorded times of more than GAP_FRAMES frames (and GAP_MIN_S),
or a frame the recorder flags as a discontinuity. A replay that stalls or ends early gives a partial clip, as
does one whose first picture comes after the start (nothing recorded before it, e.g. past the retention).
Each replay ends with one bounded ``outcome`` label (OUTCOMES), counted by the source.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from agent.clips.capture import CaptureResult
from agent.clips.stream import describe_error, to_utc
from agent.clips.thumbnail import keyframe_jpeg
from agent.clips.writer import FragmentedMp4Writer, Frame
from agent.credentials import Credentials
from agent.recorded.rtsp_replay import START_CODE, RecordedFrame, ReplayError, ReplaySession

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90_000)
MAX_LEAD_S = 10.0  # a replay starts at the keyframe at or before the start: at most a long GOP earlier
GAP_FRAMES, GAP_MIN_S = 3, 0.5
DEFAULT_FRAME_S = 0.04
_EPS = 1e-3
OUTCOMES = (
    "complete", "gap", "late_start", "stalled", "ended_early", "refused", "unknown_recording", "other_time",
    "no_times", "no_footage", "failed",
)  # fmt: skip


@dataclass(frozen=True)
class ReplayOutcome:
    result: CaptureResult
    outcome: str  # one of OUTCOMES


@dataclass(frozen=True)
class ReplayTarget:
    """Where to replay from: the device's ledger address (never the one it advertises) and replay path."""

    host: str
    port: int
    path: str
    creds: Credentials | None = field(repr=False)
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0


def capture_replay(
    target: ReplayTarget,
    start: datetime,
    end: datetime,
    out_path: Path,
    cancel: threading.Event | None = None,
    *,
    earliest: datetime | None = None,
) -> ReplayOutcome:
    """Replay [start, end) as fast as the recorder allows into ``out_path``; blocks until done. ``earliest``:
    the recording's earliest moment (its retention), to explain a clip that starts late."""
    clip = _RecordedClip(start.timestamp(), end.timestamp(), out_path)
    try:
        with ReplaySession(
            target.host, target.port, target.path, target.creds, open_timeout_s=target.open_timeout_s,
            read_timeout_s=target.read_timeout_s,
        ) as session:  # fmt: skip
            session.play(clip.start, clip.end, rate_control=False)
            clip.parameter_sets = session.parameter_sets
            for frame in session.frames():
                if (cancel is not None and cancel.is_set()) and clip.stop("cancelled", "ended_early"):
                    break
                if clip.take(frame):
                    break
    except ReplayError as exc:
        clip.stop(*_replay_error(exc, clip.started))
    except (av.error.FFmpegError, OSError, ValueError) as exc:  # the muxer or the disk
        clip.stop(f"write failed: {describe_error(exc)}", "failed")
    finally:
        clip.close()
    return clip.result(earliest.timestamp() if earliest else None)


def _replay_error(exc: ReplayError, started: bool) -> tuple[str, str]:
    if exc.kind == "refused":
        return f"recorder refused replay ({exc})", "refused"
    if exc.kind == "unknown":
        return f"recording unknown to the recorder ({exc})", "unknown_recording"
    if exc.kind == "stalled":
        return f"replay stalled ({exc})", "stalled" if started else "no_footage"
    return f"replay {'ended early' if started else 'failed'} ({exc})", "ended_early" if started else "failed"


class _RecordedClip:
    def __init__(self, start: float, end: float, out_path: Path) -> None:
        self.start, self.end, self.out_path = start, end, out_path
        self.writer: FragmentedMp4Writer | None = None
        self.template: Any = None
        self.first: float | None = None
        self.last: float | None = None
        self.frame_s = DEFAULT_FRAME_S
        self.gaps: list[tuple[float, float]] = []
        self.thumbnail: bytes | None = None
        self.reached_end = False
        self.error: str | None = None
        self.outcome = ""
        self.parameter_sets = b""  # from the SDP: used when the first keyframe carries none

    @property
    def started(self) -> bool:
        return self.writer is not None

    def stop(self, error: str, outcome: str) -> bool:
        if self.error is None:
            self.error, self.outcome = error, outcome
        return True

    def take(self, frame: RecordedFrame) -> bool:
        """Handle one frame; True when the clip is done."""
        recorded = frame.recorded
        if recorded is None:
            return self.stop(
                "the recorder sent no recorded times (ONVIF replay header extension)", "no_times"
            )
        if self.writer is None:
            if not frame.keyframe:
                return False
            if recorded >= self.end - _EPS or recorded < self.start - MAX_LEAD_S:
                return self.stop(
                    f"the recorder returned {_iso(recorded)}, not the window asked", "other_time"
                )
            self._open(frame)
        assert self.first is not None
        if recorded >= self.end - _EPS:
            self.reached_end = True
            return True
        if self.last is not None:
            if recorded <= self.last:
                return self.stop(f"recorded times went backwards at {_iso(recorded)}", "other_time")
            step = recorded - self.last
            if frame.discontinuity or step > max(GAP_FRAMES * self.frame_s, GAP_MIN_S):
                self.gaps.append((self.last + self.frame_s, recorded))
            else:
                self.frame_s = step
        self._write(frame, recorded)
        if recorded + self.frame_s >= self.end - _EPS:  # the last frame that begins before the end
            self.reached_end = True
            return True
        if frame.last:
            return self.stop(
                f"the recorder ended the replay at {_iso(recorded + self.frame_s)}", "ended_early"
            )
        return False

    def _open(self, frame: RecordedFrame) -> None:
        in_band = any(nal and nal[0] & 0x1F == 7 for nal in frame.data.split(START_CODE))  # an SPS
        first = frame.data if in_band else self.parameter_sets + frame.data
        container = av.open(io.BytesIO(first), format="h264")
        holder = av.open(io.BytesIO(), "w", format="mp4")
        self.template = holder.add_stream_from_template(container.streams.video[0])
        container.close()
        self.writer = FragmentedMp4Writer(
            self.out_path, self.template, time_base=TIME_BASE, codec="h264", wallclock_source="recording"
        )
        self.first = frame.recorded
        self.thumbnail = keyframe_jpeg("h264", None, first)

    def _write(self, frame: RecordedFrame, recorded: float) -> None:
        assert self.writer is not None and self.first is not None
        ticks = round((recorded - self.first) / TIME_BASE)
        duration = round(self.frame_s / TIME_BASE)
        packet = Frame(frame.data, ticks, ticks, duration, frame.keyframe, time.time())
        self.writer.write(packet, recorded, recorded + self.frame_s)
        self.last = recorded

    def close(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def result(self, earliest: float | None) -> ReplayOutcome:
        writer = self.writer
        if writer is None or self.first is None or self.last is None:
            error = self.error or "the recorder sent no footage of the window"
            return ReplayOutcome(CaptureResult.failed(error), self.outcome or "no_footage")
        covered_end = self.last + self.frame_s
        if self.error is None and self.first > self.start + _EPS:
            late = (
                "the recording starts at" if earliest and earliest > self.start else "nothing recorded before"
            )
            self.stop(f"{late} {_iso(self.first)}", "late_start")
        if self.gaps and self.error is None:
            stretches = ", ".join(f"{_iso(a)}..{_iso(b)}" for a, b in self.gaps[:5])
            self.stop(f"gap in the recording: {stretches}", "gap")
        complete = self.error is None and self.reached_end
        width, height = self.template.codec_context.width, self.template.codec_context.height
        gaps = tuple((_utc(a), _utc(b)) for a, b in self.gaps)
        result = CaptureResult(
            _utc(self.first), _utc(covered_end), "recording", writer.size_bytes, writer.sha256, "h264", width,
            height, self.thumbnail, complete, self.error, None, gaps,
        )  # fmt: skip
        return ReplayOutcome(result, "complete" if complete else self.outcome or "ended_early")


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def _iso(moment: float) -> str:
    stamp = to_utc(moment)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z") if stamp else "?"
