"""Stream health checks against camsim's RTSP server (small 640x360 clips) and against broken servers."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import av
import av.error
import numpy as np
import pytest

from agent.errors import CameraError
from agent.stream_check import (
    FrameMemory,
    StreamCheck,
    StreamChecker,
    StreamTarget,
    Timeouts,
    check_streams,
    downscale,
    grab_keyframe,
    health_reasons,
    image_reasons,
    measure,
    rtsp_open_options,
    stream_url,
    tiny,
)
from camsim.media import MediaLibrary
from camsim.model import CameraSpec, Faults, ImageFault, stream_profiles
from camsim.rtsp_server import RtspServer

LOOP_S = 4.0  # 4 keyframes per loop with gop=25 at 25 fps
FIXED_CLOCK = 1_000_000.0  # a multiple of LOOP_S: the camera clock is set through clock_skew_s alone
_hosts = itertools.count(1)


# --- pure image metrics -------------------------------------------------------------------------------


def noise(seed: int = 1, shape: tuple[int, int] = (360, 640)) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 200, size=shape).astype(np.uint8)


def reasons_of(image: np.ndarray, previous: np.ndarray | None = None) -> list[str]:
    small = downscale(image)
    mad = None
    if previous is not None:
        memory = FrameMemory()
        memory.compare_and_keep("c", tiny(downscale(previous)))
        mad = memory.compare_and_keep("c", tiny(small))
    return image_reasons(measure(small), mad)


def test_image_reasons_on_synthetic_pictures() -> None:
    sharp = noise()
    assert reasons_of(sharp) == []
    assert reasons_of(np.full((360, 640), 16, np.uint8)) == ["image_black"]
    assert reasons_of(np.full((360, 640), 0, np.uint8)) == ["image_black"]  # full-range black
    smooth = np.tile(np.linspace(30, 220, 640, dtype=np.float32), (360, 1)).astype(np.uint8)
    assert reasons_of(smooth) == ["image_blurred"]
    covered = sharp.copy()
    covered[40:, 40:600] = 60
    assert reasons_of(covered) == ["image_covered"]
    assert reasons_of(sharp, previous=sharp) == ["image_frozen"]
    assert reasons_of(sharp, previous=noise(2)) == []


def test_downscale_keeps_aspect_and_memory_frame_is_tiny() -> None:
    small = downscale(np.zeros((1080, 1920), np.uint8))
    assert small.shape == (270, 480)
    assert tiny(small).nbytes <= 10_000
    assert downscale(np.zeros((360, 640), np.uint8)).shape == (360, 640)


def test_stream_url_inserts_quoted_credentials() -> None:
    url = stream_url("rtsp://10.0.0.5:554/Streaming/101", "admin", "p@ss:w/rd")
    assert url == "rtsp://admin:p%40ss%3Aw%2Frd@10.0.0.5:554/Streaming/101"
    assert stream_url("rtsp://10.0.0.5/s", None, None, port=8554) == "rtsp://10.0.0.5:8554/s"


@pytest.mark.parametrize("uri", ["http://10.0.0.5/s", "file:///etc/passwd", "rtmp://10.0.0.5/s", "10.0.0.5"])
def test_stream_url_refuses_a_camera_uri_that_is_not_rtsp(uri: str) -> None:
    with pytest.raises(ValueError, match="not rtsp"):
        stream_url(uri, "admin", "pw", host="127.20.0.5")
    assert stream_url("rtsps://10.0.0.5/s", "a", "b", host="127.20.0.5") == "rtsps://a:b@127.20.0.5/s"


@pytest.mark.parametrize("opener", ["stream check", "clip session"])
def test_ffmpeg_opens_no_other_protocol_than_rtsp_with_our_options(opener: str) -> None:
    """An http URL (a redirect, a URI that slipped through) is refused before any connection is made."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://admin:pw@127.0.0.1:{listener.getsockname()[1]}/stream"
        with pytest.raises((CameraError, av.error.ArgumentError)):
            if opener == "stream check":
                grab_keyframe(url, Timeouts(open_s=1, read_s=1, total_s=2))
            else:
                av.open(url, options=rtsp_open_options(1.0), timeout=(1, 1))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: the credentials went nowhere


def test_health_reasons_name_stream_failures() -> None:
    from agent.errors import CameraError

    assert health_reasons(StreamCheck(ok=False, error=CameraError("timeout", "x"))) == ["stream_timeout"]
    assert health_reasons(StreamCheck(ok=False, reasons=["image_black"])) == ["image_black"]


# --- against camsim -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaLibrary:
    """Clips encoded up front, so a busy machine does not turn a first DESCRIBE into a timeout."""
    library = MediaLibrary(tmp_path_factory.mktemp("agent-clips"), loop_s=LOOP_S)
    variants: list[ImageFault] = ["none", "black", "frozen", "blurred", "covered"]
    for spec in [camera(v) for v in variants] + [camera(codec="h265")]:
        library.clip(stream_profiles(spec)[0], spec.faults.image)
    return library


def camera(image: ImageFault = "none", **kwargs: Any) -> CameraSpec:
    n = next(_hosts)
    defaults: dict[str, Any] = {"rtsp_port": 0, "main_size": (640, 360), "sub_size": (320, 180), "gop": 25}
    faults = Faults(image=image, **kwargs.pop("faults", {}))
    return CameraSpec(f"sc-{n:03d}", "test", f"127.60.40.{n}", faults=faults, **{**defaults, **kwargs})


@asynccontextmanager
async def serving(specs: list[CameraSpec], media: MediaLibrary) -> AsyncIterator[list[StreamTarget]]:
    servers = [RtspServer(spec, media, clock=lambda: FIXED_CLOCK) for spec in specs]
    for server in servers:
        await server.start()
    try:
        yield [
            StreamTarget(s.spec.camera_id, f"rtsp://admin:admin@{s.spec.host}:{s.port}/stream1")
            for s in servers
        ]
    finally:
        for server in servers:
            await server.stop()


@pytest.fixture
async def checker() -> AsyncIterator[StreamChecker]:
    c = StreamChecker(concurrency=8, timeouts=Timeouts(open_s=2.0, read_s=2.0, total_s=4.0))
    yield c
    c.close()


def at_keyframe(specs: list[CameraSpec], n: int) -> None:
    """Point every camera's clock inside the loop's n-th GOP, so consecutive checks see other keyframes."""
    for spec in specs:
        spec.faults.clock_skew_s = n + 0.5


@pytest.mark.integration
async def test_each_image_fault_gives_its_reason(media: MediaLibrary, checker: StreamChecker) -> None:
    variants: list[ImageFault] = ["none", "black", "frozen", "blurred", "covered"]
    specs = [camera(v) for v in variants] + [camera("none", codec="h265")]
    async with serving(specs, media) as targets:
        at_keyframe(specs, 0)
        first = await check_streams(targets, checker)
        at_keyframe(specs, 1)
        second = await check_streams(targets, checker)
    ids = [s.camera_id for s in specs]
    expected_first = [[], ["image_black"], [], ["image_blurred"], ["image_covered"], []]
    assert [first.results[i].reasons for i in ids] == expected_first
    expected_second = [[], ["image_black"], ["image_frozen"], ["image_blurred"], ["image_covered"], []]
    assert [second.results[i].reasons for i in ids] == expected_second
    normal, hevc = second.results[ids[0]], second.results[ids[-1]]
    assert normal.ok and (normal.codec, normal.width, normal.height) == ("h264", 640, 360)
    assert hevc.ok and hevc.codec == "hevc"
    assert second.cpu_s > 0 and second.check_cpu_ms > 0


async def timed(check: Awaitable[StreamCheck]) -> tuple[StreamCheck, float]:
    started = time.monotonic()
    result = await check
    return result, time.monotonic() - started


@pytest.mark.integration
async def test_a_hanging_camera_costs_its_timeout_and_does_not_stall_others(media: MediaLibrary) -> None:
    specs = [camera(faults={"hang": True})] + [camera() for _ in range(3)]
    checker = StreamChecker(concurrency=4, timeouts=Timeouts(open_s=1.5, read_s=1.5, total_s=3.0))
    try:
        async with serving(specs, media) as targets:
            at_keyframe(specs, 2)
            results = await asyncio.gather(*(timed(checker.check(t.camera_id, t.url)) for t in targets))
    finally:
        checker.close()
    (hung, hung_s), *others = results
    assert hung.error is not None and hung.error.kind == "timeout"
    assert 1.2 < hung_s < 4.0
    for result, seconds in others:
        assert result.ok, result
        assert seconds < 1.2  # finished while the hung check was still waiting


async def bare_server(reply: bytes) -> tuple[asyncio.Server, str]:
    """An RTSP-ish server on loopback: answers the first request head with `reply`, then hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    host = f"127.60.41.{next(_hosts)}"
    server = await asyncio.start_server(handle, host, 0)
    return server, f"rtsp://{host}:{server.sockets[0].getsockname()[1]}/stream1"


@pytest.mark.integration
@pytest.mark.parametrize(
    "reply",
    [b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 400\r\n\r\nv=0\r\n", b"\x00\x01garbage" * 50],
    ids=["truncated", "garbage"],
)
async def test_truncated_or_garbage_rtsp_is_a_protocol_error(checker: StreamChecker, reply: bytes) -> None:
    server, url = await bare_server(reply)
    try:
        result, seconds = await timed(checker.check("bad", url))
    finally:
        server.close()
    assert result.error is not None and result.error.kind == "protocol"
    assert not result.ok and seconds < 1.0  # the answer was wrong, not late: no timeout was waited for


@pytest.mark.integration
async def test_stream_errors_map_to_the_taxonomy(media: MediaLibrary) -> None:
    specs = [camera(faults={"wrong_credentials": True}), camera(faults={"stream_stop_after_s": 0.0})]
    checker = StreamChecker(concurrency=4, timeouts=Timeouts(open_s=1.0, read_s=1.0, total_s=2.0))
    try:
        async with serving(specs, media) as targets:
            targets.append(StreamTarget("refused", "rtsp://127.60.41.250:9/stream1"))
            report = await check_streams(targets, checker)
    finally:
        checker.close()
    kinds = {cid: (c.error.kind if c.error else None) for cid, c in report.results.items()}
    assert kinds == {
        specs[0].camera_id: "unauthorized",
        specs[1].camera_id: "timeout",
        "refused": "unreachable",
    }
    assert "admin" not in str(report.results)  # URLs with credentials never reach results or messages
