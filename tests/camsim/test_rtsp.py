"""The simulated camera's RTSP server, checked with third-party clients: PyAV (FFmpeg) and ffprobe.

Cameras listen on 127.0.32.x with free ports, stream small pictures (320x180) and a 4 s loop so each
clip encodes in a fraction of a second, once per test session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from camsim.font import read_text
from camsim.media import MediaLibrary
from camsim.model import CameraSpec
from camsim.rtsp_load import measure_streams
from camsim.rtsp_server import RtspServer

pytestmark = pytest.mark.integration

OPEN_ERRORS = (
    av.error.InvalidDataError,
    av.error.ExitError,
    av.error.HTTPUnauthorizedError,
    TimeoutError,
    OSError,
)
READ_ERRORS = (*OPEN_ERRORS, av.error.EOFError)
LOOP_S = 4.0
W, H = 320, 180
_hosts = iter(range(2, 250))


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaLibrary:
    return MediaLibrary(tmp_path_factory.mktemp("clips"), loop_s=LOOP_S)


def camera(**kwargs: Any) -> CameraSpec:
    host = f"127.0.32.{next(_hosts)}"
    defaults: dict[str, Any] = {"rtsp_port": 0, "main_size": (W, H), "sub_size": (192, 108), "gop": 25}
    return CameraSpec(f"test-{host.rsplit('.', 1)[1]}", "test", host, **{**defaults, **kwargs})


@asynccontextmanager
async def serving(spec: CameraSpec, media: MediaLibrary) -> AsyncIterator[RtspServer]:
    server = RtspServer(spec, media)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def url(server: RtspServer, path: str = "/stream1", password: str | None = None) -> str:
    spec = server.spec
    return f"rtsp://{spec.username}:{password or spec.password}@{spec.host}:{server.port}{path}"


def open_stream(address: str, timeout_s: float = 5.0) -> av.container.InputContainer:
    options = {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32768",
               "timeout": str(int(timeout_s * 1e6))}  # fmt: skip
    return av.open(address, options=options, timeout=(timeout_s, timeout_s))


def camera_time(container: av.container.InputContainer, pts: int | None, time_base: Fraction | None) -> float:
    """Wall-clock time of a frame as the client learns it from RTCP (start_time_realtime) and pts."""
    assert container.start_time_realtime is not None and pts is not None and time_base is not None
    return container.start_time_realtime / 1e6 + float(pts * time_base)


def decode(address: str, count: int, skip: int = 0) -> tuple[list[av.VideoFrame], dict[str, Any]]:
    """Decode ``count`` frames after ``skip`` ones; returns frames and facts about the stream."""
    with open_stream(address) as container:
        stream = container.streams.video[0]
        frames: list[av.VideoFrame] = []
        first_key = None
        for frame in container.decode(stream):
            first_key = frame.key_frame if first_key is None else first_key
            if skip:
                skip -= 1
                continue
            frames.append(frame)
            if len(frames) >= count:
                break
        facts = {
            "codec": stream.codec_context.name, "width": stream.codec_context.width,
            "height": stream.codec_context.height, "rate": stream.average_rate, "first_key": first_key,
            "camera_time": camera_time(container, frames[-1].pts, stream.time_base), "received": time.time(),
        }  # fmt: skip
        return frames, facts


@pytest.mark.parametrize(("codec", "skew_s"), [("h264", 0.0), ("h265", -3600.0)])
async def test_pyav_opens_stream_with_codec_size_rate_keyframe_and_camera_clock(
    media: MediaLibrary, codec: str, skew_s: float
) -> None:
    spec = camera(codec=codec)
    spec.faults.clock_skew_s = skew_s
    async with serving(spec, media) as server:
        _, facts = await asyncio.to_thread(decode, url(server), 30)
    assert (facts["codec"], facts["width"], facts["height"]) == (
        {"h264": "h264", "h265": "hevc"}[codec],
        W,
        H,
    )
    assert facts["rate"] == 25
    assert facts["first_key"] is True
    # The last decoded frame was sent just now: its RTCP-derived time is the camera's clock (skew included).
    assert abs(facts["camera_time"] - (facts["received"] + skew_s)) < 1.0


async def test_burned_in_clock_and_sei_carry_camera_time_and_id(media: MediaLibrary) -> None:
    spec = camera()
    spec.faults.clock_skew_s = 7.3

    def capture() -> tuple[list[tuple[str, float]], bytes]:
        with open_stream(url(server)) as container:
            stream = container.streams.video[0]
            readings, keyframe = [], b""
            for packet in container.demux(stream):
                keyframe = keyframe or (bytes(packet) if packet.is_keyframe else b"")
                for frame in packet.decode():
                    if frame.pts is not None:
                        luma = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
                        text = read_text(luma, H // 50, W // 50, 1, 5)
                        readings.append((text, camera_time(container, frame.pts, stream.time_base)))
                if len(readings) >= 40:
                    return readings, keyframe
        raise AssertionError("stream ended")

    async with serving(spec, media) as server:
        readings, keyframe = await asyncio.to_thread(capture)
    for text, when in readings:
        expected = round(when * 25) % int(LOOP_S * 25)
        assert text == f"{expected // 25:02d}.{expected % 25:02d}", (text, when)
    assert f"camsim:{spec.camera_id}".encode() in keyframe


async def test_ffprobe_reports_codec_and_size(media: MediaLibrary) -> None:
    spec = camera(codec="h265")
    async with serving(spec, media) as server:
        for transport in (["-rtsp_transport", "tcp"], []):  # without: UDP first, 461, then TCP
            probe = await asyncio.create_subprocess_exec(
                "ffprobe", "-v", "error", *transport, "-show_streams", "-of", "json", url(server, "/stream2"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(probe.communicate(), 30)
            stream = json.loads(out)["streams"][0]
            assert (stream["codec_name"], stream["width"], stream["height"]) == ("hevc", 192, 108)
            assert stream["r_frame_rate"] == "25/1"


async def test_capture_across_loop_is_continuous_and_real_time(media: MediaLibrary) -> None:
    await capture_is_continuous(media, camera(), seconds=5.5)


async def capture_is_continuous(media: MediaLibrary, spec: CameraSpec, seconds: float) -> None:
    def capture() -> list[tuple[int, float]]:
        with open_stream(url(server)) as container:
            arrivals = []
            end = time.monotonic() + seconds
            for packet in container.demux(container.streams.video[0]):
                if packet.pts is not None:
                    arrivals.append((packet.pts, time.monotonic()))
                if time.monotonic() > end:
                    return arrivals
        raise AssertionError("stream ended")

    async with serving(spec, media) as server:
        arrivals = await asyncio.to_thread(capture)
    steps = {b - a for (a, _), (b, _) in itertools.pairwise(arrivals)}
    assert steps == {3600}, "pts must advance by exactly one frame (90 kHz / 25) across loop boundaries"
    # Real-time pacing, after the start GOP that is sent at once.
    settled = [t for _, t in arrivals if t > arrivals[0][1] + 1.2]
    fps = (len(settled) - 1) / (settled[-1] - settled[0])
    assert 24 <= fps <= 26


@pytest.mark.slow
async def test_sixty_second_capture_crosses_the_default_loop(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    library = MediaLibrary(tmp_path_factory.mktemp("clips20"))  # 20 s loop: a minute crosses it three times
    await capture_is_continuous(library, camera(), seconds=60)


def laplacian_var(gray: np.ndarray) -> float:
    g = gray.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def uniform_fraction(gray: np.ndarray, tile: int = 10) -> float:
    h, w = (s - s % tile for s in gray.shape)
    tiles = gray[:h, :w].astype(np.float32).reshape(h // tile, tile, w // tile, tile)
    return float((tiles.std(axis=(1, 3)) < 2.0).mean())


@pytest.mark.parametrize("image", ["none", "black", "frozen", "blurred", "covered"])
async def test_image_faults_show_in_decoded_frames(media: MediaLibrary, image: str) -> None:
    spec = camera()
    spec.faults.image = image  # type: ignore[assignment]
    async with serving(spec, media) as server:
        frames, _ = await asyncio.to_thread(decode, url(server), 10)
    first, last = (f.to_ndarray(format="gray") for f in (frames[0], frames[-1]))
    mean, moved = float(last.mean()), float(np.abs(first.astype(np.int16) - last).mean())
    sharpness, uniform = laplacian_var(last), uniform_fraction(last)
    if image == "black":
        assert mean < 10
    elif image == "frozen":
        assert mean > 50 and moved == 0.0
    elif image == "blurred":
        assert moved > 2.0 and sharpness < 100  # the normal picture measures in the thousands
    elif image == "covered":
        assert uniform > 0.6 and moved > 0.5  # edges still show the moving scene
    else:
        assert mean > 50 and moved > 5.0 and sharpness > 1000 and uniform < 0.05


async def test_stream_stop_fault_silences_stream_after_delay(media: MediaLibrary) -> None:
    spec = camera()
    spec.faults.stream_stop_after_s = 1.5

    def read_until_error() -> tuple[list[float], float, int]:
        started = time.monotonic()
        with open_stream(url(server), timeout_s=1.0) as container:
            arrivals = []
            with contextlib.suppress(READ_ERRORS):
                for _ in container.demux(video=0):
                    arrivals.append(time.monotonic() - started)
                return arrivals, -1.0, server.sessions  # the stream ended instead of timing out
            return arrivals, time.monotonic() - started, server.sessions

    async with serving(spec, media) as server:
        arrivals, failed_at, sessions = await asyncio.to_thread(read_until_error)
    assert sessions == 1  # the camera keeps the TCP session open, it just sends nothing
    # The parser emits the last frame only when the read fails: the silence starts before the largest gap.
    gap, silent_from = max((b - a, a) for a, b in itertools.pairwise(arrivals))
    assert 1.2 < silent_from < 2.2 and gap > 0.8
    assert silent_from < failed_at < silent_from + 3


async def test_hung_camera_times_out_while_another_streams(media: MediaLibrary) -> None:
    hung, healthy = camera(), camera()
    hung.faults.hang = True

    def open_hung() -> float:
        started = time.monotonic()
        with pytest.raises(OPEN_ERRORS):
            open_stream(url(hung_server), timeout_s=1.5)
        return time.monotonic() - started

    async with serving(hung, media) as hung_server, serving(healthy, media) as healthy_server:
        waited, (frames, _) = await asyncio.gather(
            asyncio.to_thread(open_hung), asyncio.to_thread(decode, url(healthy_server), 50)
        )
    assert 1.0 < waited < 6.0
    assert len(frames) == 50


async def test_teardown_closes_session(media: MediaLibrary) -> None:
    async with serving(camera(), media) as server:
        container = await asyncio.to_thread(open_stream, url(server))
        await asyncio.to_thread(lambda: next(container.decode(video=0)))
        assert server.sessions == 1
        await asyncio.to_thread(container.close)  # sends TEARDOWN
        deadline = time.monotonic() + 3
        while server.sessions and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.02)
        assert server.sessions == 0


@pytest.mark.parametrize("case", ["wrong password", "camera rejects", "no credentials"])
async def test_open_fails_without_valid_credentials(media: MediaLibrary, case: str) -> None:
    spec = camera()
    spec.faults.wrong_credentials = case == "camera rejects"
    async with serving(spec, media) as server:
        address = url(server, password="nope" if case == "wrong password" else None)
        if case == "no credentials":
            address = f"rtsp://{spec.host}:{server.port}/stream1"
        with pytest.raises(OPEN_ERRORS):
            await asyncio.to_thread(open_stream, address, 3.0)
        assert server.sessions == 0


async def test_udp_setup_is_refused_with_461(media: MediaLibrary) -> None:
    async with serving(camera(), media) as server:
        reader, writer = await asyncio.open_connection(server.spec.host, server.port)
        writer.write(
            b"SETUP rtsp://x/stream1/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n"
            b"Authorization: Basic YWRtaW46YWRtaW4=\r\n"  # admin:admin
            b"Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
    assert head.startswith(b"RTSP/1.0 461 ")


async def test_load_client_measures_real_time_streams(media: MediaLibrary) -> None:
    servers = [RtspServer(camera(), media) for _ in range(4)]
    for server in servers:
        await server.start()
    try:
        result = await measure_streams([url(s) for s in servers], 3.0)
    finally:
        for server in servers:
            await server.stop()
    assert result["ok"] == 4 and result["realtime"] is True, result
    assert 23 <= result["fps_mean"] <= 30 and result["kbps_mean"] > 500
