"""Pre-encoded video loops and JPEG snapshots for simulated cameras.

A camera streams a loop that was encoded once (PyAV, libx264/libx265 from the wheel) and cached on disk,
so thousands of cameras cost only packetisation. Each clip is keyed by codec, size, fps, GOP, bitrate,
image variant and loop length; it is generated lazily on first use, once per process even under
concurrent first use, and reused across runs from ``cache_dir``.

Burned-in clock: the picture shows ``SS.ff`` = the camera clock's seconds modulo the loop length and the
frame number. The loop length divides 60 s and the RTSP server starts each session at the loop position
that matches the camera clock (real clock + skew), so a captured frame shows when it was sent (the true
seconds-of-minute when the loop is 60 s long, seconds modulo 20 with the default 20 s loop).

Camera id: one shared clip cannot carry every camera's id in its pixels, so the RTSP packetiser sends an
SEI user-data-unregistered NAL unit (``camsim:<camera_id>``) before every keyframe (see camsim/rtp.py),
and the snapshot JPEG, rendered per camera, shows the id visibly.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from camsim.font import draw_text
from camsim.model import CameraSpec, ImageFault, StreamProfile, stream_profiles
from camsim.picture import PictureSource

log = logging.getLogger(__name__)

CLIP_FORMAT = 2  # bump when the picture or encoder settings change: old cache entries are then ignored
SNAPSHOT_WIDTH = 640
_START_CODE = re.compile(b"\x00\x00\x01")


@dataclass(frozen=True, eq=False)
class AccessUnit:
    """One encoded frame: its slice NAL units (no start codes, no parameter sets, no encoder SEI)."""

    pts: int  # frame number within the loop (time base 1/fps)
    keyframe: bool
    nals: tuple[bytes, ...]


@dataclass(frozen=True, eq=False)
class EncodedClip:
    """A seamless loop of access units; ``parameter_sets`` are VPS (H.265), SPS, PPS in that order."""

    profile: StreamProfile
    variant: ImageFault
    loop_s: float
    parameter_sets: tuple[bytes, ...]
    units: tuple[AccessUnit, ...]

    @property
    def frames(self) -> int:
        return len(self.units)

    @property
    def bitrate_kbps(self) -> float:
        size = sum(len(nal) for unit in self.units for nal in unit.nals)
        return size * 8 / self.loop_s / 1000


def nal_type(codec: str, nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F if codec == "h265" else nal[0] & 0x1F


# Parameter sets are re-sent by the packetiser; AUD and the encoder's SEI are not needed on the wire.
_PARAMETER_TYPES = {"h264": (7, 8), "h265": (32, 33, 34)}
_DROPPED_TYPES = {"h264": (6, 9), "h265": (35, 39, 40)}


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (4-byte start codes leave a zero byte that is stripped)."""
    return [part.rstrip(b"\x00") for part in _START_CODE.split(data) if part.strip(b"\x00")]


def _clip_key(profile: StreamProfile, variant: ImageFault, loop_s: float) -> str:
    p = profile
    size = f"{p.width}x{p.height}-{p.fps}fps-g{p.gop}-{p.bitrate_kbps}k"
    if p.keyframe_slices > 1:
        size += f"-{p.keyframe_slices}slices"
    return f"{p.codec}-{size}-{variant}-{loop_s:g}s-v{CLIP_FORMAT}"


def _encoder(profile: StreamProfile, variant: ImageFault) -> av.VideoCodecContext:
    kbps, gop = profile.bitrate_kbps, profile.gop
    common = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1"
    if profile.keyframe_slices > 1:
        common += f":slices={profile.keyframe_slices}:sliced-threads=0"
    if variant == "frozen":  # constant QP: P-frames of a still picture are all skip, frames decode identical
        common, kbps = common + ":qp=24", 0
    else:
        common += f":vbv-maxrate={kbps}:vbv-bufsize={kbps}"
    cc = av.CodecContext.create("libx265" if profile.codec == "h265" else "libx264", "w")
    assert isinstance(cc, av.VideoCodecContext)
    cc.width, cc.height, cc.pix_fmt = profile.width, profile.height, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, profile.fps), Fraction(profile.fps, 1)
    cc.gop_size, cc.max_b_frames, cc.bit_rate = gop, 0, kbps * 1000
    if profile.codec == "h265":
        cc.options = {"preset": "ultrafast", "tune": "zerolatency",
                      "x265-params": common + ":open-gop=0:log-level=error"}  # fmt: skip
    else:
        cc.options = {"preset": "veryfast", "tune": "zerolatency", "x264-params": common}
    return cc


def encode_loop(profile: StreamProfile, variant: ImageFault, loop_s: float) -> list[tuple[int, bool, bytes]]:
    """Encode the loop; returns (pts, keyframe, Annex-B bytes) per access unit."""
    frames = round(loop_s * profile.fps)
    source = PictureSource(profile.width, profile.height, frames, profile.fps, variant)
    cc = _encoder(profile, variant)
    out: list[tuple[int, bool, bytes]] = []

    def collect(packets: list[av.Packet[Any]]) -> None:
        out.extend((int(p.pts or 0), p.is_keyframe, bytes(p)) for p in packets)

    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(source.frame(index), format="yuv420p")
        frame.pts = index
        frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder place keyframes by GOP
        collect(cc.encode(frame))
    collect(cc.encode(None))
    return out


def _to_clip(
    profile: StreamProfile, variant: ImageFault, loop_s: float, units: list[tuple[int, bool, bytes]]
) -> EncodedClip:
    params: dict[int, bytes] = {}
    parsed: list[AccessUnit] = []
    for pts, key, data in sorted(units):
        kept = []
        for nal in split_annexb(data):
            kind = nal_type(profile.codec, nal)
            if kind in _PARAMETER_TYPES[profile.codec]:
                params.setdefault(kind, nal)
            elif kind not in _DROPPED_TYPES[profile.codec]:
                kept.append(nal)
        parsed.append(AccessUnit(pts, key, tuple(kept)))
    if not parsed or not parsed[0].keyframe:
        raise RuntimeError(f"clip {profile} {variant} does not start with a keyframe")
    parameter_sets = tuple(params[kind] for kind in _PARAMETER_TYPES[profile.codec])
    return EncodedClip(profile, variant, loop_s, parameter_sets, tuple(parsed))


class MediaLibrary:
    """Encoded clips (cached in memory and under ``cache_dir``) and per-camera snapshots."""

    def __init__(self, cache_dir: Path, *, loop_s: float = 20.0) -> None:
        if loop_s <= 0 or (60 / loop_s) % 1:
            raise ValueError(f"loop_s must divide 60 s, got {loop_s}")
        self.cache_dir = Path(cache_dir)
        self.loop_s = loop_s
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._clips: dict[str, EncodedClip] = {}
        self._snapshots: dict[tuple[str, int, ImageFault], bytes] = {}
        self._pictures: dict[tuple[int, int, int, ImageFault], PictureSource] = {}

    def clip(self, profile: StreamProfile, image: ImageFault) -> EncodedClip:
        """The loop for ``profile`` in picture variant ``image``; blocks while it is first encoded."""
        key = _clip_key(profile, image, self.loop_s)
        with self._lock:
            found = self._clips.get(key)
            if found is not None:
                return found
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one encoder per key; other callers wait for it
            with self._lock:
                found = self._clips.get(key)
            if found is None:
                found = _to_clip(profile, image, self.loop_s, self._load_or_encode(key, profile, image))
                with self._lock:
                    self._clips[key] = found
            return found

    def _load_or_encode(
        self, key: str, profile: StreamProfile, image: ImageFault
    ) -> list[tuple[int, bool, bytes]]:
        data_path, index_path = self.cache_dir / f"{key}.annexb", self.cache_dir / f"{key}.json"
        if index_path.exists():
            data = data_path.read_bytes()
            index = json.loads(index_path.read_text())
            return [(pts, key_, data[off : off + size]) for off, size, pts, key_ in index]
        started = time.monotonic()
        units = encode_loop(profile, image, self.loop_s)
        log.info("encoded clip %s in %.1f s", key, time.monotonic() - started)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        entries, offset = [], 0
        for pts, key_, data in units:
            entries.append((offset, len(data), pts, key_))
            offset += len(data)
        # Write to temporary names and rename: the index appears last, so a reader never sees half a clip.
        suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"
        data_tmp, index_tmp = (
            data_path.with_name(data_path.name + suffix),
            index_path.with_name(index_path.name + suffix),
        )
        data_tmp.write_bytes(b"".join(data for _, _, data in units))
        index_tmp.write_text(json.dumps(entries))
        data_tmp.replace(data_path)
        index_tmp.replace(index_path)
        return units

    def snapshot_jpeg(self, spec: CameraSpec) -> bytes:
        """JPEG of the main stream's current picture at SNAPSHOT_WIDTH, with camera id and camera time."""
        now = time.time() + spec.faults.clock_skew_s
        image = spec.faults.image
        key = (spec.camera_id, int(now), image)
        with self._lock:
            cached = self._snapshots.get(key)
        if cached is not None:
            return cached
        main = stream_profiles(spec)[0]
        width = SNAPSHOT_WIDTH
        height = max(4, round(width * main.height / main.width / 4) * 4)
        picture = self._picture(width, height, main.fps, image)
        yuv = picture.frame(int(now * main.fps)).copy()
        scale = max(1, height // 180)
        stamp = "" if image == "frozen" else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
        draw_text(yuv[:height], spec.camera_id, height - 20 * scale, 4 * scale, scale)
        if stamp:
            draw_text(yuv[:height], stamp, height - 10 * scale, 4 * scale, scale)
        jpeg = _encode_jpeg(yuv, width, height)
        with self._lock:
            if len(self._snapshots) > 4096:
                self._snapshots.clear()
            self._snapshots[key] = jpeg
        return jpeg

    def _picture(self, width: int, height: int, fps: int, image: ImageFault) -> PictureSource:
        key = (width, height, fps, image)
        with self._lock:
            picture = self._pictures.get(key)
            if picture is None:
                picture = PictureSource(width, height, round(self.loop_s * fps), fps, image)
                self._pictures[key] = picture
            return picture


def _encode_jpeg(yuv: np.ndarray, width: int, height: int) -> bytes:
    cc = av.CodecContext.create("mjpeg", "w")
    assert isinstance(cc, av.VideoCodecContext)
    cc.width, cc.height, cc.pix_fmt = width, height, "yuvj420p"
    cc.time_base = Fraction(1, 25)
    cc.options = {"qscale": "4"}
    # JPEG is full range: stretch video-range luma (16..235) and chroma (16..240) before encoding.
    full = np.empty_like(yuv)
    full[:height] = np.clip((yuv[:height].astype(np.int32) - 16) * 255 // 219, 0, 255)
    full[height:] = np.clip((yuv[height:].astype(np.int32) - 128) * 255 // 224 + 128, 0, 255)
    frame = av.VideoFrame.from_ndarray(full, format="yuv420p")
    frame.color_range = 2  # JPEG range, so the encoder takes the frame as yuvj420p as it is
    return b"".join(bytes(p) for p in cc.encode(frame))
