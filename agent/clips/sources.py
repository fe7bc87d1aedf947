"""Where a clip's footage comes from, in the order the agent tries them, and the recorded-storage interface.

Order, decided once when a request is admitted (agent/clips/admission.py):
1. ``live``: the window starts now or later (within LIVE_TOLERANCE): the camera's live stream.
2. ``preroll``: it started earlier and the camera's pre-roll buffer (an armed camera) holds its start.
3. ``recording``: recorded storage offers the camera (its own storage or the district's recorder).
Otherwise the request fails with a reason naming each source tried and why it could not serve. A recording
that turns out not to hold the window (older than the retention, a recorder that refuses, ...) fails later,
in the pipeline, with the recording's own reason.

A recorded source is one object behind ``RecordedSource``; ONVIF Profile G (agent/recorded/source.py) is the
first. An adapter for a vendor VMS export API implements the same three methods and nothing else changes:
the pipeline writes what its clip's ``capture`` writes (a fragmented MP4 of the window, via
agent/clips/writer.py) and uploads, signs and reports it like any other clip.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from agent.clips.capture import CaptureResult
from contract.manifest import Recording
from contract.messages import ClipSource, RecordedReach

# A start this close to now needs no buffer: the live stream's next keyframe is that close.
LIVE_TOLERANCE = timedelta(seconds=2)


class SourceUnavailableError(Exception):
    """A source cannot serve a window; the message says why (safe to report: no address, no credential),
    `outcome` in a word (a bounded metric label, e.g. "retention")."""

    def __init__(self, message: str, outcome: str = "unavailable") -> None:
        super().__init__(message)
        self.outcome = outcome


class RecordedClip(Protocol):
    """A recording found to cover (part of) a window, ready to be captured."""

    @property
    def recording(self) -> Recording:
        """What the manifest records: the recording's token, device, source name and time base."""
        ...

    def capture(
        self, start: datetime, end: datetime, out_path: Path, cancel: threading.Event | None
    ) -> CaptureResult:
        """Blocking (a pipeline thread): write [start, end) as fragmented MP4 to ``out_path``. Times in the
        result are the recorded ones; ``gaps`` lists what is missing inside the covered window; a result
        that holds no video says why in ``error``. Must never write footage of another time."""
        ...


class RecordedSource(Protocol):
    """Recorded storage of some of the district's cameras. Lifecycle: ``close`` once at the end."""

    def why_not(self, camera_id: str) -> str | None:
        """None if this source may hold the camera's footage (known without I/O: used at admission)."""
        ...

    async def locate(self, camera_id: str, start: datetime, end: datetime) -> RecordedClip:
        """The recording of the camera that covers the window, at least in part; else SourceUnavailableError
        with the reason (e.g. the window is older than the retention)."""
        ...

    async def reach(self, camera_id: str) -> RecordedReach | None:
        """Whether the camera's recordings can be reached and how far back they go (None: not offered)."""
        ...

    async def close(self) -> None: ...


def choose(
    start: datetime, now: datetime, earliest_buffered: datetime | None, recording_refusal: str | None
) -> tuple[ClipSource | None, str | None]:
    """(source, None), or (None, why no source can serve a window starting at ``start``)."""
    if start >= now - LIVE_TOLERANCE:
        return "live", None
    if earliest_buffered is not None and start >= earliest_buffered - LIVE_TOLERANCE:
        return "preroll", None
    if recording_refusal is None:
        return "recording", None
    buffer = "start further in the past than any buffer holds"
    if earliest_buffered is not None:
        buffer += f" (it starts at {earliest_buffered.isoformat(timespec='seconds')})"
    return None, f"no source holds the window: pre-roll: {buffer}; recording: {recording_refusal}"
