"""Recorded footage for the simulator's Profile G devices: which recordings exist, what they cover, and their
pictures, synthesised on demand.

A recording (``rec-<camera id>``) covers its camera from ``now - retention_s`` to now, minus its gaps (times
the camera was down: nothing was recorded). It is served by the camera itself (a personality with
``profile_g``) or by a recorder (a CameraSpec whose ``records`` names the cameras on it).

Pictures: the same scrolling pattern as the live stream (camsim/picture.py), with the RECORDED time burned in
at the top left as ``YYYY-MM-DD HH:MM:SS`` (UTC), so a test can read which moment came back. Encoding every
frame of days of 1080p is out of the question (~74 fps here), so each second of footage is one GOP: an IDR
picture of that second, encoded alone (~25 ms at 1080p), followed by fps-1 P-frames that repeat it. Those
P-frames are all-skip and do not depend on the picture, so they are encoded once per stream profile and
shared by every GOP. GOPs are cached in memory (bounded by bytes), shared by every camera: the camera id
travels in an SEI before each keyframe (camsim/rtp.py), as in the live stream.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from camsim.font import draw_text
from camsim.media import AccessUnit, nal_type, split_annexb
from camsim.model import CameraSpec, StreamProfile
from camsim.picture import PictureSource

DAY_S = 86_400.0
DEFAULT_RETENTION_S = 3 * DAY_S
QP = 34  # ~280 KB per 1080p IDR: about 2.3 Mbit/s, a typical recorder's main stream
CACHE_BYTES = 256 * 2**20
_PARAMETER_TYPES = (7, 8)  # H.264 SPS, PPS (recordings are H.264)
_DROPPED_TYPES = (6, 9)  # encoder SEI, AUD


def recording_token(camera_id: str) -> str:
    return f"rec-{camera_id}"


def clock_text(second: int) -> str:
    """The burned-in recorded time of ``second`` (epoch): ``YYYY-MM-DD HH:MM:SS`` UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))


@dataclass
class Recording:
    """One camera's recording on one device. Times are epoch seconds on the device clock."""

    token: str
    source_id: str  # the camera id (the recorder's channel is named after the ledger id)
    name: str
    retention_s: float = DEFAULT_RETENTION_S
    gaps: list[tuple[float, float]] = field(default_factory=list)  # [start, end): the camera was down

    def earliest(self, now: float) -> float:
        return now - self.retention_s

    def spans(self, start: float, end: float, now: float) -> list[tuple[float, float]]:
        """The recorded pieces of [start, end), within retention and before ``now``, in order."""
        pieces = [(max(start, self.earliest(now)), min(end, now))]
        for gap_start, gap_end in sorted(self.gaps):
            out = []
            for a, b in pieces:
                if gap_end <= a or gap_start >= b:
                    out.append((a, b))
                    continue
                if a < gap_start:
                    out.append((a, gap_start))
                if gap_end < b:
                    out.append((gap_end, b))
            pieces = out
        return [(a, b) for a, b in pieces if b > a]


def default_gaps(camera_id: str, now: float) -> list[tuple[float, float]]:
    """One outage per camera, deterministic from its id: 5-15 min, starting 1-6 hours ago (whole seconds)."""
    digest = hashlib.sha256(camera_id.encode()).digest()
    ago = 3600 + int.from_bytes(digest[:2], "big") % (5 * 3600)
    length = 300 + int.from_bytes(digest[2:4], "big") % 600
    start = float(int(now) - ago)
    return [(start, start + length)]


# What every simulated device records: the main stream, as H.264 with a one-second GOP.
RECORDED_PROFILE = StreamProfile("recording", "/replay", "h264", 1920, 1080, 25, 25, 2300)


class Archive:
    """The recordings of a fleet, by token, which device serves which, and their footage."""

    def __init__(
        self, *, profile: StreamProfile = RECORDED_PROFILE, footage: Footage | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.profile, self.clock = profile, clock
        self.footage = footage or Footage()
        self.recordings: dict[str, Recording] = {}

    def add(self, recording: Recording) -> Recording:
        self.recordings[recording.token] = recording
        return recording

    def record(self, specs: Iterable[CameraSpec], *, retention_s: float = DEFAULT_RETENTION_S) -> None:
        """A recording for every camera some device stores (its own storage or a recorder), default gaps."""
        now = self.clock()
        for spec in specs:
            for camera_id in served_cameras(spec):
                if recording_token(camera_id) not in self.recordings:
                    gaps = default_gaps(camera_id, now)
                    self.add(Recording(recording_token(camera_id), camera_id, camera_id, retention_s, gaps))

    def on_device(self, spec: CameraSpec) -> list[Recording]:
        """The recordings device ``spec`` serves, in camera order."""
        wanted = served_cameras(spec)
        return [r for r in self.recordings.values() if r.source_id in wanted]


def served_cameras(spec: CameraSpec) -> tuple[str, ...]:
    """Camera ids whose recordings device ``spec`` serves: a recorder's list, or itself with Profile G."""
    if spec.records:
        return spec.records
    return (spec.camera_id,) if spec.personality.profile_g else ()


@dataclass(frozen=True, eq=False)
class Gop:
    """One second of footage: its access units, the IDR first (H.264, no parameter sets)."""

    units: tuple[AccessUnit, ...]

    @property
    def size(self) -> int:
        return sum(len(nal) for unit in self.units for nal in unit.nals)


class Footage:
    """Encoded seconds of recorded footage per stream profile (H.264, GOP = one second), cached by bytes."""

    def __init__(self, cache_bytes: int = CACHE_BYTES) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[StreamProfile, int], Gop] = OrderedDict()
        self._cache_bytes, self._bytes = cache_bytes, 0
        self._templates: dict[StreamProfile, tuple[tuple[bytes, ...], tuple[AccessUnit, ...]]] = {}
        self._pictures: dict[StreamProfile, PictureSource] = {}
        self._key_locks: dict[tuple[StreamProfile, int], threading.Lock] = {}

    def parameter_sets(self, profile: StreamProfile) -> tuple[bytes, ...]:
        return self._template(profile)[0]

    def gop(self, profile: StreamProfile, second: int) -> Gop:
        """The GOP of epoch second ``second``; encoded on first use (one encoder per second at a time)."""
        key = (profile, second)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                found = self._cache.get(key)
            if found is None:
                found = self._encode(profile, second)
                self._store(key, found)
        with self._lock:
            self._key_locks.pop(key, None)
        return found

    def _store(self, key: tuple[StreamProfile, int], gop: Gop) -> None:
        with self._lock:
            self._cache[key] = gop
            self._bytes += gop.size
            while self._bytes > self._cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.size

    def _picture(self, profile: StreamProfile, second: int) -> Any:
        with self._lock:
            source = self._pictures.get(profile)
            if source is None:
                source = PictureSource(profile.width, profile.height, 60 * profile.fps, profile.fps, "none")
                self._pictures[profile] = source
        plane = source.frame((second % 60) * profile.fps).copy()
        scale, top, left = max(1, profile.height // 135), profile.height // 50, profile.width // 50
        draw_text(plane[: profile.height], clock_text(second), top, left, scale)
        return plane

    def _encode(self, profile: StreamProfile, second: int) -> Gop:
        params, p_frames = self._template(profile)
        units = _encode_frames(profile, [self._picture(profile, second)])
        found_params, idr = _split(units[0][1])
        if found_params != params:
            raise RuntimeError("the encoder changed its parameter sets between GOPs")
        return Gop((AccessUnit(0, True, idr), *p_frames))

    def _template(self, profile: StreamProfile) -> tuple[tuple[bytes, ...], tuple[AccessUnit, ...]]:
        """Parameter sets and the shared all-skip P-frames, from one GOP of a still picture."""
        with self._lock:
            found = self._templates.get(profile)
        if found is not None:
            return found
        picture = self._picture(profile, 0)
        units = _encode_frames(profile, [picture] * profile.fps)
        params, _ = _split(units[0][1])
        p_frames = tuple(AccessUnit(pts, False, _split(data)[1]) for pts, data in units[1:])
        if len(p_frames) != profile.fps - 1 or any(sum(map(len, u.nals)) > 64 for u in p_frames):
            raise RuntimeError("the encoder did not produce all-skip P-frames for a still picture")
        with self._lock:
            return self._templates.setdefault(profile, (params, p_frames))


def _split(data: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(parameter sets, slices) of one Annex-B access unit."""
    params, slices = [], []
    for nal in split_annexb(data):
        kind = nal_type("h264", nal)
        if kind in _PARAMETER_TYPES:
            params.append(nal)
        elif kind not in _DROPPED_TYPES:
            slices.append(nal)
    return tuple(params), tuple(slices)


def _encode_frames(profile: StreamProfile, planes: list[Any]) -> list[tuple[int, bytes]]:
    """Encode ``planes`` as one GOP at constant QP (a still picture then gives all-skip P-frames)."""
    cc = av.CodecContext.create("libx264", "w")
    assert isinstance(cc, av.VideoCodecContext)
    cc.width, cc.height, cc.pix_fmt = profile.width, profile.height, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, profile.fps), Fraction(profile.fps, 1)
    cc.gop_size, cc.max_b_frames = profile.fps, 0
    params = f"keyint={profile.fps}:min-keyint={profile.fps}:scenecut=0:bframes=0:repeat-headers=1:qp={QP}"
    cc.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": params + ":sliced-threads=0"}
    out: list[tuple[int, bytes]] = []
    for index, plane in enumerate(planes):
        frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
        frame.pts = index
        frame.pict_type = av.video.frame.PictureType.NONE
        out.extend((int(p.pts or 0), bytes(p)) for p in cc.encode(frame))
    out.extend((int(p.pts or 0), bytes(p)) for p in cc.encode(None))
    return sorted(out)
