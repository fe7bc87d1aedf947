"""Captures from camsim's RTSP cameras (H.264 and H.265, 640x360, GOP 25 at 25 fps), checked with ffprobe.

camsim burns the camera clock (seconds modulo its loop, and frame) into the picture and sends RTCP sender
reports with the same clock, so a clip's first frame tells whether covered_start is right.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from agent.clips.capture import CaptureResult
from agent.clips.session import SessionPool
from agent.clips.stream import WallClock
from agent.clips.writer import Frame, box_spans, progress_path, recover_partial
from camsim.font import read_text
from camsim.media import MediaLibrary
from camsim.model import CameraSpec, stream_profiles
from camsim.rtsp_server import RtspServer
from tests.agent.clips.clip_harness import serving

W, H, FPS, GOP, LOOP_S = 640, 360, 25, 25, 4.0
GOP_S = GOP / FPS
_hosts = iter(range(2, 250))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaLibrary:
    library = MediaLibrary(tmp_path_factory.mktemp("clips"), loop_s=LOOP_S)
    for codec in ("h264", "h265"):  # encode once, before any test starts its clock
        library.clip(stream_profiles(camera(codec=codec))[0], "none")
    return library


def camera(**kwargs: Any) -> CameraSpec:
    host = f"127.70.1.{next(_hosts)}"
    defaults: dict[str, Any] = {"rtsp_port": 0, "main_size": (W, H), "fps": FPS, "gop": GOP}
    return CameraSpec(f"cam-{host.rsplit('.', 1)[1]}", "test", host, **{**defaults, **kwargs})


def url(server: RtspServer) -> str:
    return f"rtsp://admin:admin@{server.spec.host}:{server.port}/stream1"


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def first_frame_and_timestamps(path: Path) -> tuple[av.VideoFrame, bool, list[int], int]:
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    with av.open(str(path)) as container:
        first = next(container.decode(video=0))
    dts = [p.dts for p in packets]
    assert None not in dts
    return first, packets[0].is_keyframe, [d for d in dts if d is not None], len(packets)


def burned_in_clock(frame: av.VideoFrame) -> str:
    scale = max(1, H // 135)
    return read_text(np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8), H // 50, W // 50, scale, 5)


def expected_clock(camera_time: float) -> str:
    index = round(camera_time * FPS) % int(LOOP_S * FPS)
    return f"{index // FPS:02d}.{index % FPS:02d}"


def assert_playable(path: Path, result: CaptureResult, codec: str) -> dict[str, Any]:
    """The checks a user makes on any clip: it plays, from a keyframe, as long as the manifest says."""
    info = probe(path)
    video = info["streams"][0]
    assert (video["codec_name"], video["width"], video["height"]) == (codec, W, H)
    if codec == "hevc":
        assert video["codec_tag_string"] == "hvc1"
    assert result.covered_start is not None and result.covered_end is not None
    covered = (result.covered_end - result.covered_start).total_seconds()
    assert float(info["format"]["duration"]) == pytest.approx(covered, abs=0.05)
    _, first_is_key, dts, _ = first_frame_and_timestamps(path)
    assert first_is_key
    assert all(b > a for a, b in itertools.pairwise(dts))
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.size_bytes == path.stat().st_size
    return info


async def capture(
    pool: SessionPool, server: RtspServer, start: datetime, end: datetime, out: Path, **kwargs: Any
) -> CaptureResult:
    return await asyncio.to_thread(
        pool.capture, server.spec.camera_id, url(server), start, end, out, **kwargs
    )


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.integration
@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_window_capture_plays_and_matches_camera_clock(
    media: MediaLibrary, tmp_path: Path, codec: str
) -> None:
    spec = camera(codec=codec)
    skew = 7.3  # camera clock runs ahead of ours; the agent measured it
    spec.faults.clock_skew_s = skew
    pool = SessionPool(open_timeout_s=3, read_timeout_s=2)
    out = tmp_path / "clip.mp4"
    start = soon(1.0)  # after the session is open, even on a loaded machine: a keyframe precedes it
    end = start + timedelta(seconds=4)
    try:
        async with serving(spec, media, pool) as server:
            result = await capture(pool, server, start, end, out, clock_offset_s=skew)
    finally:
        pool.close()

    name = {"h264": "h264", "h265": "hevc"}[codec]
    assert result.error is None and result.complete
    source = result.wallclock_source
    assert (result.codec, result.width, result.height, source) == (name, W, H, "rtcp_corrected")
    info = assert_playable(out, result, name)
    assert 4.0 <= float(info["format"]["duration"]) <= 4.0 + GOP_S + 0.05
    assert result.covered_start is not None and result.covered_end is not None
    assert start - timedelta(seconds=GOP_S) <= result.covered_start <= start
    # It ends at the first frame at or after `end`, mid-GOP: no wait for the next keyframe (up to a GOP).
    assert end <= result.covered_end < end + timedelta(seconds=1 / FPS + 0.005)
    # The first frame's burned-in camera clock is covered_start on the camera's clock.
    first, _, _, _ = first_frame_and_timestamps(out)
    assert burned_in_clock(first) == expected_clock(result.covered_start.timestamp() + skew)
    assert result.thumbnail_jpeg is not None
    with av.open(io.BytesIO(result.thumbnail_jpeg), "r") as jpeg:
        thumb = next(jpeg.decode(video=0))
    assert (thumb.width, thumb.height) == (480, 270)


@pytest.mark.integration
async def test_overlapping_captures_share_one_rtsp_session(media: MediaLibrary, tmp_path: Path) -> None:
    spec = camera()
    pool = SessionPool(open_timeout_s=3, read_timeout_s=2)
    try:
        async with serving(spec, media, pool) as server:
            first = asyncio.create_task(capture(pool, server, soon(0), soon(2.5), tmp_path / "a.mp4"))
            await asyncio.sleep(0.5)  # the second request comes while the first is being written
            second = asyncio.create_task(capture(pool, server, soon(0), soon(2.5), tmp_path / "b.mp4"))
            sessions_seen = set()
            while not (first.done() or second.done()):  # while both run
                sessions_seen.add(server.sessions)
                await asyncio.sleep(0.05)
            await asyncio.wait([first, second])
            a, b = first.result(), second.result()
            await wait_for(lambda: server.sessions == 0, 5)  # closed (TEARDOWN) once nobody needs it
    finally:
        pool.close()
    assert sessions_seen == {1}
    assert a.complete and b.complete, (a.error, b.error)
    assert a.covered_start is not None and b.covered_start is not None
    # Both start on a keyframe at or before their own start: the same one when both starts fall in one GOP.
    assert b.covered_start >= a.covered_start
    assert_playable(tmp_path / "a.mp4", a, "h264")
    assert_playable(tmp_path / "b.mp4", b, "h264")


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_armed_camera_serves_a_window_that_started_before_the_request(
    media: MediaLibrary, tmp_path: Path
) -> None:
    spec = camera()
    pool = SessionPool(open_timeout_s=3, read_timeout_s=2)
    try:
        async with serving(spec, media, pool) as server:
            await asyncio.to_thread(pool.arm, spec.camera_id, url(server), 30)

            def buffered_3s() -> bool:
                earliest = pool.earliest_buffered(spec.camera_id)
                return earliest is not None and earliest <= soon(-3.2)

            await wait_for(buffered_3s, 8)
            start, end = soon(-3), soon(1)
            began = time.monotonic()
            result = await capture(pool, server, start, end, tmp_path / "c.mp4")
            took = time.monotonic() - began
            assert server.sessions == 1  # the arm's session, still open for later requests
    finally:
        pool.close()
    assert result.complete and result.covered_start is not None
    assert start - timedelta(seconds=GOP_S) <= result.covered_start <= start
    assert took < 1 + GOP_S + 0.5  # the past came from the buffer; only the last second was waited for
    assert_playable(tmp_path / "c.mp4", result, "h264")


@pytest.mark.integration
async def test_a_held_window_outlives_the_arm_while_its_capture_waits(
    media: MediaLibrary, tmp_path: Path
) -> None:
    """Under concurrent capture an admitted request waits in the queue for a worker; the arm it relied on
    ends meanwhile (and, with nobody subscribed, so would the session and its buffer). Admission's hold
    keeps the window buffered until the capture takes it."""
    spec = camera()
    pool = SessionPool(open_timeout_s=3, read_timeout_s=2)
    arm_s = 4.0
    try:
        async with serving(spec, media, pool) as server:
            arm_ends = time.monotonic() + arm_s
            await asyncio.to_thread(pool.arm, spec.camera_id, url(server), arm_s)

            def buffered_2s() -> bool:
                earliest = pool.earliest_buffered(spec.camera_id)
                return earliest is not None and earliest <= soon(-2.2)

            await wait_for(buffered_2s, arm_s)
            start, end = soon(-2), soon(-1)
            pool.hold(spec.camera_id, "req-1", start)  # what admission does for a window in the buffer
            # the request waits for a worker past the arm's end, and past a GOP more (buffer trimmed by then)
            await wait_for(lambda: time.monotonic() > arm_ends + 2 * GOP_S, arm_s + 3 * GOP_S)
            result = await capture(pool, server, start, end, tmp_path / "c.mp4")
            pool.release_hold(spec.camera_id, "req-1")
            # released and unarmed: the session ends (TEARDOWN) once its capture is done
            await wait_for(lambda: server.sessions == 0, 2 * GOP_S + 1)
    finally:
        pool.close()
    assert result.error is None and result.complete and result.covered_start is not None
    assert start - timedelta(seconds=GOP_S) <= result.covered_start <= start
    assert_playable(tmp_path / "c.mp4", result, "h264")


@pytest.mark.integration
async def test_a_preroll_lost_with_the_stream_is_logged_with_its_reason(
    media: MediaLibrary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stall past the read timeout ends the input; the new one's timestamps restart, so the buffer
    starts afresh: the operator is told how much pre-roll went and why."""
    spec = camera()
    spec.faults.stream_stop_after_s = 2.5  # the camera goes silent, the TCP connection stays
    pool = SessionPool(open_timeout_s=2, read_timeout_s=1)
    caplog.set_level("WARNING", logger="agent.clips.session")
    try:
        async with serving(spec, media, pool) as server:
            await asyncio.to_thread(pool.arm, spec.camera_id, url(server), 30)
            await wait_for(lambda: "pre-roll" in caplog.text, 10)
    finally:
        pool.close()
    message = next(r.getMessage() for r in caplog.records if "pre-roll" in r.getMessage())
    assert "discarded (stream lost" in message
    assert "admin" not in message  # the URL (with credentials) is never quoted


@pytest.mark.integration
async def test_stream_loss_keeps_what_was_captured(media: MediaLibrary, tmp_path: Path) -> None:
    spec = camera()
    spec.faults.stream_stop_after_s = 2.0  # the camera goes silent, the TCP connection stays
    pool = SessionPool(open_timeout_s=2, read_timeout_s=1)
    out = tmp_path / "lost.mp4"
    try:
        async with serving(spec, media, pool) as server:
            start = soon(0)
            result = await capture(pool, server, start, soon(8), out)
    finally:
        pool.close()
    assert not result.complete and result.error is not None and "admin" not in result.error
    assert result.covered_start is not None and result.covered_end is not None
    assert result.covered_end - start < timedelta(seconds=2.3)
    assert result.covered_end - result.covered_start > timedelta(seconds=1.5)
    assert_playable(out, result, "h264")
    assert json.loads(progress_path(out).read_text())["final"] is True


@pytest.mark.integration
async def test_cancel_and_unreachable_camera(media: MediaLibrary, tmp_path: Path) -> None:
    spec, offline = camera(), camera()
    offline.faults.offline = True
    pool = SessionPool(open_timeout_s=2, read_timeout_s=2)
    out = tmp_path / "cancelled.mp4"
    cancel = threading.Event()
    try:
        async with serving(spec, media) as server, serving(offline, media, pool) as dead:
            task = asyncio.create_task(capture(pool, server, soon(0), soon(30), out, cancel=cancel))
            await wait_for(lambda: progress_path(out).exists(), 5)
            cancel.set()
            result = await task
            failed = await capture(pool, dead, soon(0), soon(2), tmp_path / "never.mp4")
    finally:
        pool.close()
    assert (result.complete, result.error) == (False, "cancelled")
    assert_playable(out, result, "h264")
    assert failed.error is not None and failed.error.startswith("open failed")
    assert "admin" not in failed.error  # the URL (with credentials) is never quoted
    assert (failed.size_bytes, failed.covered_start) == (0, None) and not (tmp_path / "never.mp4").exists()


KILLED_CAPTURE = """
import sys
from datetime import datetime, timedelta, UTC
from pathlib import Path
from agent.clips.session import SessionPool
now = datetime.now(UTC)
SessionPool().capture("cam", sys.argv[1], now, now + timedelta(seconds=30), Path(sys.argv[2]))
"""


@pytest.mark.integration
async def test_sigkill_mid_capture_leaves_a_recoverable_prefix(media: MediaLibrary, tmp_path: Path) -> None:
    spec = camera()
    out = tmp_path / "killed.mp4"
    async with serving(spec, media) as server:
        root = Path(__file__).parents[3]
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", KILLED_CAPTURE, url(server), str(out), cwd=root
        )
        try:

            def two_fragments() -> bool:
                spans = box_spans(out.read_bytes()) if out.exists() else []
                return sum(kind == b"mdat" for kind, _, _ in spans) >= 2

            await wait_for(two_fragments, 10)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
    valid, start, end = recover_partial(out)
    progress = json.loads(progress_path(out).read_text())
    assert valid >= progress["bytes"] > 0
    assert start == datetime.fromisoformat(progress["covered_start"])
    assert end is not None and end >= datetime.fromisoformat(progress["covered_end"])
    with out.open("r+b") as f:
        f.truncate(valid)
    duration = float(probe(out)["format"]["duration"])
    assert start is not None and duration == pytest.approx((end - start).total_seconds(), abs=0.05)
    _, first_is_key, _, count = first_frame_and_timestamps(out)
    assert first_is_key and count == round(duration * FPS)


def test_wall_clock_falls_back_to_receive_time_until_the_first_sender_report() -> None:
    clock = WallClock(Fraction(1, 90_000), clock_offset_s=2.0)
    burst = [Frame(b"", i * 3600, i * 3600, 0, i == 0, 1000.5) for i in range(10)]  # back-dated GOP, at once
    for frame in burst:
        clock.observe(frame, None)
    live = Frame(b"", 10 * 3600, 10 * 3600, 0, False, 1000.5 + 0.01)  # then real time, 10 ms late
    clock.observe(live, None)
    source: str = clock.source
    assert source == "local"
    assert clock.wall(burst[0]) == pytest.approx(1000.5 + 0.01 - 0.4)  # our clock: the offset is not applied
    first_sr_us = 1_000_200_000  # camera clock at pts 0: 1000.2 s
    clock.observe(Frame(b"", 11 * 3600, 11 * 3600, 0, False, 1000.6), first_sr_us)
    source = clock.source
    assert source == "rtcp_corrected"
    assert clock.wall(burst[0]) == pytest.approx(1000.2 - 2.0)  # camera clock minus its measured offset


@pytest.mark.integration
async def test_a_window_that_is_no_longer_buffered_gives_no_clip(media: MediaLibrary, tmp_path: Path) -> None:
    """A clip that shows another time than the one asked for would be worse than none."""
    spec = camera()
    pool = SessionPool(open_timeout_s=3, read_timeout_s=2)
    try:
        async with serving(spec, media, pool) as server:
            result = await capture(pool, server, soon(-60), soon(-30), tmp_path / "gone.mp4")
    finally:
        pool.close()
    assert result.size_bytes == 0 and not result.complete
    assert result.error is not None and "no longer available" in result.error
    assert not (tmp_path / "gone.mp4").exists()
