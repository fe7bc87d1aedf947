"""Stream health: open a camera's RTSP stream, decode its first keyframe, and look at the picture.

One check costs one RTSP session up to the first keyframe (FACTS.md: ~0.1 s open, ~0.8 s to a keyframe
with a 2 s GOP and the tuned options below) and ~10-60 ms of CPU: only keyframes are decoded, the gray plane
is downscaled to ~480x270 by an integer block mean, and the metrics are plain numpy.

Picture faults, measured on the Y plane (limited or full range, as decoded; values 0-255):
- image_black: mean < BLACK_MEAN and std < BLACK_STD (a capped lens; a night scene keeps lights and noise).
- image_covered: >= COVERED_FRACTION of a 16x16 tile grid is flat (tile std < FLAT_TILE_STD) at one level
  (means within +-DOMINANT_SPREAD of their median): something in front of the lens.
- image_blurred: variance of the 4-neighbour Laplacian < BLUR_LAPLACIAN_VAR (out of focus, fogged).
- image_frozen: mean absolute difference to the previous check's tiny frame < FROZEN_MAD.
Black supersedes the other three; covered supersedes blurred (a flat region has no edges anyway).

Calibration: camsim clips, H.264 and H.265, three checks per variant (values on the downscaled Y plane):
        variant   mean   std   lap_var 640x360 / 1920x1080   flat (16x16)   MAD to previous check
        normal    ~109   ~38      2200-2330 / 220-290           0.00           ~61
        black       16   0.0           0 / 0                     1.00           0
        frozen    ~109   ~38      2120-2140 / 290               0.00           0 (identical keyframes)
        blurred   ~109   ~31          10-26 / 11-20              0.00           ~55
        covered    ~62   ~31       740-760 / 217-223            0.73-0.77      ~10-14
Thresholds sit in the gaps: lap_var < 60 (the 1080p sharp/blurred gap is the narrowest: 11-20 vs 220),
dominant flat fraction >= 0.6, MAD < 0.8. A real scene's Laplacian variance depends on its content (a
foggy night is legitimately soft): treat image_blurred as a hint for a person, not an alarm.
On real cameras the frozen check compares pictures minutes apart (OSD clock and sensor noise move);
camsim's short loop can serve the same keyframe twice, so tests pin the simulated camera clock.
CPU per check (thread time, open to metrics): ~10-20 ms at 640x360, ~25-60 ms at 1080p: check sub streams.

Blocking work runs in a dedicated thread pool behind a semaphore: a thread cannot be cancelled, so each
check has its own timeouts (FFmpeg socket timeout, PyAV open/read timeouts, a wall deadline between
packets) and the slot is released only when the thread really ends.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.error
import numpy as np
import numpy.typing as npt

from agent.errors import CameraError

log = logging.getLogger(__name__)

Gray = npt.NDArray[np.float32]

# A camera-supplied stream URI may only be RTSP; and FFmpeg may open only the RTSP demuxer's own connection
# (TCP, TLS for rtsps) for it, so no URI or redirect can make it follow http, file, ... with the credentials.
STREAM_SCHEMES = frozenset({"rtsp", "rtsps"})
RTSP_PROTOCOL_WHITELIST = "tcp,tls"
TARGET_WIDTH = 480
TILES = 16
BLACK_MEAN, BLACK_STD = 35.0, 6.0
FLAT_TILE_STD, DOMINANT_SPREAD, COVERED_FRACTION = 4.0, 12.0, 0.6
BLUR_LAPLACIAN_VAR = 60.0
FROZEN_MAD = 0.8
MEMORY_WIDTH = 120  # remembered frame per camera: ~120x68 bytes, ~8 KB; 2,700 cameras ~22 MB
MAX_PACKETS = 3000  # give up on a stream that sends this many packets without a keyframe
_Y_PLANE_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}


@dataclass(frozen=True)
class ImageMetrics:
    mean: float
    std: float
    laplacian_var: float
    flat_fraction: float
    dominant_fraction: float


@dataclass(frozen=True)
class StreamCheck:
    ok: bool  # decoded a picture and found nothing wrong with it
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    reasons: list[str] = field(default_factory=list)  # "image_black", "image_frozen", ...
    decode_ms: float | None = None  # open to first decoded keyframe, wall time
    error: CameraError | None = None
    metrics: ImageMetrics | None = None
    cpu_ms: float = 0.0  # CPU time of the checking thread


@dataclass(frozen=True)
class _Keyframe:
    codec: str
    width: int
    height: int
    gray: Gray  # downscaled
    decode_ms: float


@dataclass(frozen=True)
class Timeouts:
    open_s: float = 3.0
    read_s: float = 3.0
    total_s: float = 8.0  # wall deadline for the whole check, checked between packets

    @property
    def hard_s(self) -> float:
        """When the event loop stops waiting for the thread (it may still be inside one blocking read)."""
        return self.total_s + self.read_s + 1.0


def stream_url(
    uri: str, username: str | None, password: str | None, *, port: int | None = None, host: str | None = None
) -> str:
    """`uri` with credentials inserted (cameras leave them out of GetStreamUri), optionally on another host
    (the address we reached the camera at: credentials must never go where an answer points) and port.

    The result holds a password: never log it. ValueError for a URI that is not rtsp:// or rtsps://, or
    with an impossible port.
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() not in STREAM_SCHEMES:
        raise ValueError(f"stream URI scheme {parts.scheme!r} is not rtsp or rtsps")
    host = host or parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port or parts.port}" if (port or parts.port) else host
    if username:
        netloc = f"{quote(username, safe='')}:{quote(password or '', safe='')}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def downscale(gray: npt.NDArray[np.uint8], target_width: int = TARGET_WIDTH) -> Gray:
    """Integer-factor block mean: 1920 -> 480, 1280 -> 427, 640 stays 640."""
    return _block_mean(gray, max(1, round(gray.shape[1] / target_width)))


def tiny(small: Gray) -> npt.NDArray[np.uint8]:
    """The frame kept per camera for the frozen check."""
    blocks = _block_mean(small, max(1, round(small.shape[1] / MEMORY_WIDTH)))
    return np.clip(np.rint(blocks), 0, 255).astype(np.uint8)


def _block_mean(image: npt.NDArray[np.uint8] | Gray, k: int) -> Gray:
    # Summing k*k strided views is ~6x faster than reshape().mean() on a 1080p plane (1.5 ms vs 10 ms).
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    acc = np.zeros((h // k, w // k), dtype=np.float32)
    for i in range(k):
        for j in range(k):
            acc += image[i:h:k, j:w:k]
    if k > 1:
        acc *= 1.0 / (k * k)
    return acc


def measure(small: Gray) -> ImageMetrics:
    lap = 4 * small[1:-1, 1:-1] - small[:-2, 1:-1] - small[2:, 1:-1] - small[1:-1, :-2] - small[1:-1, 2:]
    th, tw = small.shape[0] // TILES, small.shape[1] // TILES
    tiles = small[: th * TILES, : tw * TILES].reshape(TILES, th, TILES, tw)
    tile_std = tiles.std(axis=(1, 3))
    tile_mean = tiles.mean(axis=(1, 3))
    flat = tile_std < FLAT_TILE_STD
    dominant = 0.0
    if flat.any():
        level = float(np.median(tile_mean[flat]))
        dominant = float(np.mean(flat & (np.abs(tile_mean - level) <= DOMINANT_SPREAD)))
    return ImageMetrics(
        mean=float(small.mean()),
        std=float(small.std()),
        laplacian_var=float(lap.var()),
        flat_fraction=float(flat.mean()),
        dominant_fraction=dominant,
    )


def image_reasons(m: ImageMetrics, mad_to_previous: float | None) -> list[str]:
    if m.mean < BLACK_MEAN and m.std < BLACK_STD:
        return ["image_black"]
    reasons = []
    if m.dominant_fraction >= COVERED_FRACTION:
        reasons.append("image_covered")
    elif m.laplacian_var < BLUR_LAPLACIAN_VAR:
        reasons.append("image_blurred")
    if mad_to_previous is not None and mad_to_previous < FROZEN_MAD:
        reasons.append("image_frozen")
    return reasons


class FrameMemory:
    """The previous check's tiny frame per camera (for frozen detection)."""

    def __init__(self) -> None:
        self._frames: dict[str, npt.NDArray[np.uint8]] = {}

    def compare_and_keep(self, camera_id: str, frame: npt.NDArray[np.uint8]) -> float | None:
        """Mean absolute difference to the previous frame (None if none, or another size); keeps `frame`."""
        previous = self._frames.get(camera_id)
        self._frames[camera_id] = frame
        if previous is None or previous.shape != frame.shape:
            return None
        return float(np.abs(previous.astype(np.int16) - frame.astype(np.int16)).mean())

    def forget(self, camera_id: str) -> None:
        self._frames.pop(camera_id, None)

    def __len__(self) -> int:
        return len(self._frames)


def rtsp_open_options(socket_timeout_s: float) -> dict[str, str]:
    """FFmpeg options for opening a camera's stream (stream checks and clip sessions)."""
    return {
        "rtsp_transport": "tcp",
        "protocol_whitelist": RTSP_PROTOCOL_WHITELIST,
        # analyzeduration 0 + small probesize: the first keyframe in ~0.1 s instead of ~2 s (FACTS.md).
        "analyzeduration": "0",
        "probesize": "32768",
        "timeout": str(int(socket_timeout_s * 1_000_000)),  # socket I/O timeout, µs
    }


def grab_keyframe(url: str, timeouts: Timeouts) -> _Keyframe:
    """Blocking: open, decode the first keyframe, downscale its gray plane, close. CameraError on failure."""
    started = time.monotonic()
    deadline = started + timeouts.total_s
    try:
        options = rtsp_open_options(timeouts.read_s)
        container = av.open(url, options=options, timeout=(timeouts.open_s, timeouts.read_s))
    except Exception as exc:
        raise _convert(exc, _timed_out(started, timeouts)) from None
    try:
        return _first_keyframe(container, started, deadline)
    except CameraError:
        raise
    except Exception as exc:
        raise _convert(exc, _timed_out(started, timeouts)) from None
    finally:
        container.close()  # sends TEARDOWN; leaks otherwise


def _first_keyframe(container: av.container.InputContainer, started: float, deadline: float) -> _Keyframe:
    if not container.streams.video:
        raise CameraError("protocol", "no video stream")
    stream = container.streams.video[0]
    stream.codec_context.skip_frame = "NONKEY"
    stream.codec_context.thread_count = 1  # frame threading only adds latency for one keyframe
    for count, packet in enumerate(container.demux(stream)):
        if time.monotonic() > deadline or count > MAX_PACKETS:
            raise CameraError("timeout", "no keyframe before the deadline")
        for frame in packet.decode():
            if not isinstance(frame, av.VideoFrame):
                continue
            gray = downscale(_luma(frame))
            codec = stream.codec_context.name
            return _Keyframe(codec, frame.width, frame.height, gray, (time.monotonic() - started) * 1000)
    raise CameraError("protocol", "stream ended before a keyframe")


def _luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane without conversion when it is 8-bit, else a gray conversion (10-bit HEVC)."""
    if frame.format.name in _Y_PLANE_FORMATS:
        plane = frame.planes[0]
        rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        return rows[: frame.height, : frame.width]
    return np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)  # 10-bit input: scaled to 8 bits


def _timed_out(started: float, timeouts: Timeouts) -> bool:
    return time.monotonic() - started >= 0.95 * min(timeouts.open_s, timeouts.read_s)


def _convert(exc: BaseException, timed_out: bool = False) -> CameraError:
    """The one place PyAV/FFmpeg exceptions become our taxonomy.

    FFmpeg's RTSP demuxer reports a server that accepts and never answers as InvalidDataError once its
    socket timeout fires: an error that arrives only after the timeout is classified as a timeout.
    """
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return CameraError("unauthorized", "camera rejected the RTSP credentials")
    if timed_out or isinstance(exc, TimeoutError | av.error.ExitError):  # ExitError: PyAV's timeout fired
        return CameraError("timeout", "RTSP stream did not answer in time")
    if isinstance(exc, ConnectionError):
        return CameraError("unreachable", type(exc).__name__)
    if isinstance(exc, av.error.InvalidDataError | av.error.EOFError | av.error.FFmpegError):
        return CameraError("protocol", f"{type(exc).__name__}: {getattr(exc, 'strerror', '') or ''}"[:200])
    if isinstance(exc, OSError):
        return CameraError("unreachable", type(exc).__name__)
    return CameraError("protocol", f"{type(exc).__name__}"[:200])


class StreamChecker:
    """Checks streams with at most `concurrency` blocking sessions; remembers frames for frozen checks."""

    def __init__(self, *, concurrency: int = 8, timeouts: Timeouts | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self.concurrency = concurrency
        self.memory = FrameMemory()
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stream-check")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, camera_id: str, url: str) -> StreamCheck:
        """One camera's stream check; never raises for camera problems (they are in `error`)."""
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._check_blocking, url)
        future.add_done_callback(lambda _: self._slots.release())  # only when the thread has ended
        try:
            check, frame = await asyncio.wait_for(asyncio.shield(future), self.timeouts.hard_s)
        except TimeoutError:
            return StreamCheck(ok=False, error=CameraError("timeout", "stream check overran its deadline"))
        if check.error is not None or check.metrics is None or frame is None:
            log.debug("stream check of %s failed: %s", camera_id, check.error)
            return check
        reasons = image_reasons(check.metrics, self.memory.compare_and_keep(camera_id, frame))
        return replace(check, ok=not reasons, reasons=reasons)

    def _check_blocking(self, url: str) -> tuple[StreamCheck, npt.NDArray[np.uint8] | None]:
        cpu0 = time.thread_time()
        try:
            key = grab_keyframe(url, self.timeouts)
        except CameraError as exc:
            return StreamCheck(ok=False, error=exc, cpu_ms=(time.thread_time() - cpu0) * 1000), None
        metrics, frame = measure(key.gray), tiny(key.gray)
        check = StreamCheck(
            ok=True,
            codec=key.codec,
            width=key.width,
            height=key.height,
            decode_ms=key.decode_ms,
            metrics=metrics,
            cpu_ms=(time.thread_time() - cpu0) * 1000,
        )
        return check, frame


@dataclass(frozen=True)
class StreamTarget:
    camera_id: str
    url: str = field(repr=False)  # holds credentials


@dataclass
class CycleReport:
    results: dict[str, StreamCheck]
    wall_s: float
    cpu_s: float  # process CPU (all threads) during the cycle

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def check_cpu_ms(self) -> float:
        """Mean CPU per check spent in the checking threads (excludes the event loop)."""
        return sum(c.cpu_ms for c in self.results.values()) / max(1, len(self.results))


async def check_streams(targets: Iterable[StreamTarget], checker: StreamChecker) -> CycleReport:
    """One health cycle over many cameras, `checker`'s concurrency bounding the sessions in flight."""
    targets = list(targets)
    wall0, cpu0 = time.monotonic(), _process_cpu_s()
    checks = await asyncio.gather(*(checker.check(t.camera_id, t.url) for t in targets))
    report = CycleReport(
        results={t.camera_id: c for t, c in zip(targets, checks, strict=True)},
        wall_s=time.monotonic() - wall0,
        cpu_s=_process_cpu_s() - cpu0,
    )
    failed = sum(1 for c in checks if c.error is not None)
    log.info(
        "stream cycle: %s cameras, %s failed, %.1f s, %.2f cores",
        len(targets),
        failed,
        report.wall_s,
        report.cores,
    )
    return report


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def health_reasons(check: StreamCheck) -> list[str]:
    """Reasons for the camera's status: image faults, or `stream_<kind>` when the stream itself failed."""
    if check.error is not None:
        return [f"stream_{check.error.kind}"]
    return list(check.reasons)
