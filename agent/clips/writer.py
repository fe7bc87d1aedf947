"""Fragmented MP4 writer for stream-copied RTSP packets, hashed while written, with a progress file.

The file grows one whole fragment (moof + mdat, one GOP with ``frag_keyframe``) at a time: bytes from the
muxer are held in memory until they form complete top-level boxes, then written in one call, so an
uploader tailing the file never reads half a fragment, and the SHA-256 is of exactly what was written.
After each fragment a sidecar ``<clip>.progress.json`` (replaced atomically) records the wall-clock range
and byte count written so far: after a SIGKILL, ``recover_partial`` finds the last complete fragment and
the range it covers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

log = logging.getLogger(__name__)

MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
_BOX_HEADER = struct.Struct(">I4s")


@dataclass(frozen=True, slots=True)
class Frame:
    """One demuxed packet, copied out of PyAV so several captures can mux it (mux rewrites packets)."""

    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    keyframe: bool
    received: float  # our clock (time.time()) when the reader got it


def progress_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".progress.json")


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def box_spans(data: bytes | bytearray | memoryview, offset: int = 0) -> list[tuple[bytes, int, int]]:
    """Complete top-level boxes as (type, start, end), from ``offset`` until the first incomplete one."""
    spans = []
    while offset + 8 <= len(data):
        size, kind = _BOX_HEADER.unpack_from(data, offset)
        header = 8
        if size == 1:
            if offset + 16 > len(data):
                break
            size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        if size < header or offset + size > len(data):
            break
        spans.append((bytes(kind), offset, offset + size))
        offset += size
    return spans


class BoxBuffer:
    """Non-seekable file object for PyAV: holds muxer output until it forms whole top-level boxes."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def write(self, data: bytes) -> int:
        self._pending += data
        return len(data)

    def take(self) -> list[tuple[bytes, bytes]]:
        """The whole boxes held, as (type, box), and forget them; a moof waits for the mdat after it."""
        spans = box_spans(self._pending)
        while spans and spans[-1][0] == b"moof":
            spans.pop()
        if not spans:
            return []
        boxes = [(kind, bytes(self._pending[start:end])) for kind, start, end in spans]
        del self._pending[: spans[-1][2]]
        return boxes


class _HashingSink(BoxBuffer):
    """Commits whole boxes to a file, hashing them."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = path.open("wb", buffering=0)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def commit(self) -> bool:
        """Write the whole boxes held (a moof waits for its mdat); True if an mdat was written."""
        boxes = self.take()
        if not boxes:
            return False
        chunk = b"".join(box for _, box in boxes)
        self._file.write(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)
        return any(kind == b"mdat" for kind, _ in boxes)

    def close(self) -> None:
        if self._pending:  # should not happen: the muxer's trailer ends on whole boxes
            log.warning("%d trailing bytes that are not whole boxes were written", len(self._pending))
            self._file.write(self._pending)
            self.sha256.update(self._pending)
            self.size += len(self._pending)
            self._pending.clear()
        self._file.close()


class StreamCopyMuxer:
    """PyAV's MP4 muxer, one fragment (moof + mdat) per GOP, for stream-copied ``Frame``s, into ``sink`` (a
    file object with ``write``: the init segment, ftyp + moov, comes with the first frame).

    Timestamp repair: frames before the first keyframe are dropped, a missing pts/dts is filled from the
    other, everything is rebased on the first keyframe's dts, and dts is kept strictly increasing.
    """

    def __init__(self, sink: Any, template: Any, *, time_base: Fraction, codec: str) -> None:
        """``template``: a PyAV stream with the input's codec parameters; ``codec``: "h264" or "hevc"."""
        self.time_base = time_base
        self._container: Any = av.open(sink, "w", format="mp4", options=MP4_OPTIONS)
        self._stream: Any = self._container.add_stream_from_template(template)
        self._stream.time_base = time_base
        if codec == "hevc":
            self._stream.codec_tag = "hvc1"  # browsers and QuickTime want hvc1, FFmpeg defaults to hev1
        self._offset: int | None = None
        self._last_dts = -1
        self._last_step = 0

    @property
    def started(self) -> bool:
        return self._offset is not None

    def mux(self, frame: Frame) -> bool:
        """Mux one frame; False if it was dropped (before the first keyframe)."""
        if self._offset is None:
            if not frame.keyframe:
                return False
            self._offset = _first_not_none(frame.dts, frame.pts)
        dts = _first_not_none(frame.dts, frame.pts) - self._offset
        pts = _first_not_none(frame.pts, frame.dts) - self._offset
        if dts <= self._last_dts:
            dts = self._last_dts + 1
        pts = max(pts, dts)
        if self._last_dts >= 0:
            self._last_step = dts - self._last_dts
        self._last_dts = dts
        packet = av.Packet(frame.data)
        packet.pts, packet.dts, packet.time_base = pts, dts, self.time_base
        packet.duration = frame.duration or self._last_step
        packet.is_keyframe = frame.keyframe
        packet.stream = self._stream
        self._container.mux(packet)
        return True

    def close(self) -> None:
        """Write the last fragment and the trailer."""
        self._container.close()


class FragmentedMp4Writer:
    """Stream-copies ``Frame``s of one video stream into ``out_path`` (StreamCopyMuxer); call ``close`` once
    at the end."""

    def __init__(
        self,
        out_path: Path,
        template: Any,
        *,
        time_base: Fraction,
        codec: str,
        wallclock_source: str = "local",
    ) -> None:
        """``template``: a PyAV stream with the input's codec parameters; ``codec``: "h264" or "hevc"."""
        self.out_path = out_path
        self.wallclock_source = wallclock_source
        self.time_base = time_base
        self._sink = _HashingSink(out_path)
        self._muxer = StreamCopyMuxer(self._sink, template, time_base=time_base, codec=codec)
        self.frames = 0
        self.covered_start: float | None = None
        self.covered_end: float | None = None
        self._closed = False

    @property
    def size_bytes(self) -> int:
        return self._sink.size

    @property
    def sha256(self) -> str:
        return self._sink.sha256.hexdigest()

    @property
    def started(self) -> bool:
        return self._muxer.started

    def write(self, frame: Frame, wall_start: float, wall_end: float) -> None:
        """Mux one frame whose wall-clock span is [wall_start, wall_end) (our clock, epoch seconds)."""
        first = not self._muxer.started
        before = self.covered_end if self.covered_end is not None else wall_start
        if not self._muxer.mux(frame):
            return
        if first:
            self.covered_start = wall_start
        self.frames += 1
        if self._sink.commit() or self.frames == 1:
            self._write_progress(before if self.frames > 1 else wall_start)
        self.covered_end = wall_end

    def close(self) -> None:
        """Write the last fragment and the trailer; the progress file then says ``final``."""
        if self._closed:
            return
        self._closed = True
        try:
            self._muxer.close()
            self._sink.commit()
        finally:
            self._sink.close()
        if self.started:
            self._write_progress(self.covered_end, final=True)

    def abort(self) -> None:
        """Close without caring about errors (the stream or the disk failed)."""
        try:
            self.close()
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("closing %s failed: %s", self.out_path.name, exc)

    def _write_progress(self, covered_end: float | None, *, final: bool = False) -> None:
        record = {
            "covered_start": iso(self.covered_start), "covered_end": iso(covered_end),
            "bytes": self._sink.size, "wallclock_source": self.wallclock_source, "final": final,
        }  # fmt: skip
        path = progress_path(self.out_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)


def _first_not_none(a: int | None, b: int | None) -> int:
    if a is not None:
        return a
    if b is not None:
        return b
    raise ValueError("packet has neither pts nor dts")


def recover_partial(out_path: Path) -> tuple[int, datetime | None, datetime | None]:
    """The playable prefix of a clip cut short (crash, lost disk): (bytes, covered_start, covered_end).

    ``bytes`` ends after the last complete moof + mdat pair (0 if there is none, or no ftyp/moov); cut the
    file there (``os.truncate``) to get a playable clip. The range starts at the progress file's
    ``covered_start`` and lasts as long as the media of the complete fragments (from tfdt and trun), so
    fragments written after the last progress update still count. Dates are None without a progress file.
    """
    data = out_path.read_bytes()
    spans = box_spans(data)
    kinds = [kind for kind, _, _ in spans]
    if b"moov" not in kinds[:3]:
        return 0, None, None
    moov = next(data[s + 8 : e] for kind, s, e in spans if kind == b"moov")
    timescale, default_duration = _track_defaults(moov)
    valid, media_end = 0, 0
    for (kind, start, end), (next_kind, _, next_end) in itertools.pairwise(spans):
        if kind == b"moof" and next_kind == b"mdat":
            valid = next_end
            media_end = max(media_end, _fragment_end(data[start + 8 : end], default_duration))
    if not valid:
        return 0, None, None
    covered_start = _progress_start(out_path)
    if covered_start is None or not timescale:
        return valid, None, None
    covered_end = covered_start + media_end / timescale
    return valid, datetime.fromtimestamp(covered_start, UTC), datetime.fromtimestamp(covered_end, UTC)


def _progress_start(out_path: Path) -> float | None:
    try:
        record = json.loads(progress_path(out_path).read_text())
        return datetime.fromisoformat(record["covered_start"]).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _children(payload: bytes) -> dict[bytes, bytes]:
    """Child boxes' payloads by type (the first of each type: one video track)."""
    found: dict[bytes, bytes] = {}
    for kind, start, end in box_spans(payload):
        found.setdefault(kind, payload[start + 8 : end])
    return found


def _track_defaults(moov: bytes) -> tuple[int, int]:
    """(media timescale from mdhd, default sample duration from trex) of the first track."""
    boxes = _children(moov)
    mdia = _children(_children(boxes.get(b"trak", b"")).get(b"mdia", b""))
    mdhd = mdia.get(b"mdhd", b"")
    timescale = 0
    if mdhd:
        timescale = struct.unpack_from(">I", mdhd, 20 if mdhd[0] == 1 else 12)[0]
    trex = _children(boxes.get(b"mvex", b"")).get(b"trex", b"")
    default_duration = struct.unpack_from(">I", trex, 12)[0] if len(trex) >= 16 else 0
    return timescale, default_duration


def _fragment_end(moof: bytes, default_duration: int) -> int:
    """Decode time at the end of a fragment: tfdt base + the durations of its samples."""
    traf = _children(_children(moof).get(b"traf", b""))
    tfhd, tfdt, trun = traf.get(b"tfhd", b""), traf.get(b"tfdt", b""), traf.get(b"trun", b"")
    base = 0
    if tfdt:
        base = struct.unpack_from(">Q" if tfdt[0] == 1 else ">I", tfdt, 4)[0]
    if tfhd:
        flags = int.from_bytes(tfhd[1:4], "big")
        offset = 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
        if flags & 0x8:
            default_duration = struct.unpack_from(">I", tfhd, offset)[0]
    return base + _trun_duration(trun, default_duration)


def _trun_duration(trun: bytes, default_duration: int) -> int:
    if len(trun) < 8:
        return 0
    flags = int.from_bytes(trun[1:4], "big")
    count: int = struct.unpack_from(">I", trun, 4)[0]
    offset = 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
    if not flags & 0x100:
        return count * default_duration
    stride = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    return sum(int(struct.unpack_from(">I", trun, offset + i * stride)[0]) for i in range(count))
