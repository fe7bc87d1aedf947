"""A live view's CMAF: stream-copied frames in, an init segment (ftyp + moov) and media segments out.

PyAV's MP4 muxer (agent/clips/writer.py StreamCopyMuxer, `frag_keyframe+empty_moov+default_base_moof`) writes
the init segment with the first frame and then one fragment (moof + mdat) per GOP into a BoxBuffer; a fragment
is complete when the next keyframe is muxed. A segment is one or more whole fragments: it ends at the first
keyframe at least `min_segment_s` after its start, so it starts with a keyframe and a player can join at any
segment. init + any segment of the same input decodes on its own. The wall clock of a segment is that of its
first frame (agent/clips/stream.py WallClock: RTCP or arrival time, corrected for the camera's clock offset),
read when the segment is complete so that an RTCP report received meanwhile counts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.clips.stream import InputStream, WallClock, pts_of
from agent.clips.writer import BoxBuffer, Frame, StreamCopyMuxer

FRAGMENT_BOXES = (b"moof", b"mdat")
INIT_BOXES = (b"ftyp", b"moov")


@dataclass(frozen=True)
class InitPiece:
    data: bytes


@dataclass(frozen=True)
class SegmentPiece:
    data: bytes
    started_at: float  # epoch seconds, our clock: capture time of the first frame
    duration_s: float


Piece = InitPiece | SegmentPiece


class Segmenter:
    """One input's segments (a new input after a camera drop needs a new Segmenter and init segment)."""

    def __init__(self, info: InputStream, clock: WallClock, min_segment_s: float) -> None:
        self._info, self._clock = info, clock
        self._min_s = min_segment_s - info.frame_s / 2  # a 25-frame GOP at 25 fps is "1 s"
        self._buffer = BoxBuffer()
        self._muxer = StreamCopyMuxer(self._buffer, info.template, time_base=info.time_base, codec=info.codec)
        self._init = b""
        self._keys: deque[Frame] = deque()  # first frame of each GOP muxed whose fragment is not out yet
        self._fragment = b""  # a moof waiting for its mdat
        self._parts: list[bytes] = []  # whole fragments of the segment being built
        self._first: Frame | None = None  # the first frame of that segment
        self._last: Frame | None = None  # the last frame muxed

    @property
    def started(self) -> bool:
        return self._muxer.started

    def push(self, frame: Frame) -> list[Piece]:
        """Mux one frame (frames before the first keyframe are dropped); the pieces it completed."""
        if not self._muxer.mux(frame):
            return []
        if frame.keyframe:
            self._keys.append(frame)
        self._last = frame
        return self._collect(final=False)

    def close(self) -> list[Piece]:
        """The last fragment, ending with the last frame (possibly mid-GOP), as the last segment."""
        self._muxer.close()
        return self._collect(final=True) if self._last is not None else []

    def _collect(self, *, final: bool) -> list[Piece]:
        pieces: list[Piece] = []
        for kind, box in self._buffer.take():
            if kind in INIT_BOXES:
                self._init += box
                if kind == b"moov":
                    pieces.append(InitPiece(self._init))
            elif kind == b"moof":
                self._fragment = box
            elif kind == b"mdat" and self._fragment:
                self._parts.append(self._fragment + box)
                self._fragment = b""
                first = self._keys.popleft()
                self._first = self._first or first
                segment = self._segment(final=final)
                if segment is not None:
                    pieces.append(segment)
        return pieces

    def _segment(self, *, final: bool) -> SegmentPiece | None:
        """The segment built so far, if it is long enough (or the input ends)."""
        assert self._first is not None and self._last is not None
        time_base = self._info.time_base
        if self._keys:  # it ends where the next GOP begins
            duration_s = float((pts_of(self._keys[0]) - pts_of(self._first)) * time_base)
        else:  # the input ends: with the last frame
            last_s = float(self._last.duration * time_base) if self._last.duration else self._info.frame_s
            duration_s = float((pts_of(self._last) - pts_of(self._first)) * time_base) + last_s
        if duration_s < self._min_s and not (final and not self._keys):
            return None
        segment = SegmentPiece(b"".join(self._parts), self._clock.wall(self._first), max(duration_s, 1e-3))
        self._parts, self._first = [], None
        return segment
