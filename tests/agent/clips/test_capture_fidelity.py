"""Evidence as the camera showed it: clip windows on the right clock, and whole first pictures from servers
that send a keyframe as several slices.

camsim burns its clock (seconds modulo the loop, and frame) into the picture and sends RTCP sender reports on
the same clock, so a clip's first frame says what time it really shows. Cameras listen on 127.77.1.x.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from agent.clips.capture import CaptureResult
from agent.clips.session import SessionPool
from agent.clips.stream import LOCAL_DELAY_S, WallClock, starts_picture
from agent.clips.writer import Frame
from agent.onvif_answers import CLOCK_OFFSET_ERROR_S
from camsim.font import read_text
from camsim.media import MediaLibrary, split_annexb
from camsim.model import CameraSpec, Personality, stream_profiles
from camsim.picture import PictureSource
from tests.agent.clips.clip_harness import serving

W, H, FPS, GOP, LOOP_S = 640, 360, 25, 25, 4.0
FRAME_S = 1 / FPS
SLICES = 4
_hosts = iter(range(2, 250))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaLibrary:
    library = MediaLibrary(tmp_path_factory.mktemp("clips"), loop_s=LOOP_S)
    for slices in (1, SLICES):  # encode before any test starts its clock
        library.clip(stream_profiles(camera(Personality(keyframe_slices=slices)))[0], "none")
    return library


def camera(personality: Personality | None = None) -> CameraSpec:
    host = f"127.77.1.{next(_hosts)}"
    return CameraSpec(
        f"cam-{host.rsplit('.', 1)[1]}", "test", host, rtsp_port=0, main_size=(W, H), fps=FPS, gop=GOP,
        personality=personality or Personality(),
    )  # fmt: skip


async def capture_window(
    media: MediaLibrary, spec: CameraSpec, out: Path, *, length_s: float, **kwargs: Any
) -> tuple[CaptureResult, datetime, datetime]:
    """Capture [now + 1 s, + length_s) from a fresh session; returns the result and the requested window."""
    pool = SessionPool(open_timeout_s=3, read_timeout_s=2)
    start = datetime.now(UTC) + timedelta(seconds=1)  # after the session is open: a keyframe precedes it
    end = start + timedelta(seconds=length_s)
    try:
        async with serving(spec, media) as server:
            url = f"rtsp://admin:admin@{spec.host}:{server.port}/stream1"
            result = await asyncio.to_thread(pool.capture, spec.camera_id, url, start, end, out, **kwargs)
    finally:
        await asyncio.to_thread(pool.close)
    return result, start, end


def first_picture(path: Path) -> tuple[av.VideoFrame, int]:
    """The clip's first decoded picture and its number of samples."""
    with av.open(str(path)) as container:
        samples = sum(1 for p in container.demux(video=0) if p.size)
    with av.open(str(path)) as container:
        return next(container.decode(video=0)), samples


def loop_index(frame: av.VideoFrame) -> int:
    """The camsim loop frame a picture shows, read from its burned-in clock ``SS.ff``."""
    gray = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
    text = read_text(gray, H // 50, W // 50, max(1, H // 135), 5)
    assert text[2] == "." and (text[:2] + text[3:]).isdigit(), f"no clock in the picture's top: {text!r}"
    return int(text[:2]) * FPS + int(text[3:])


def camera_time_index(camera_time: float) -> int:
    return round(camera_time * FPS) % int(LOOP_S * FPS)


def band_errors(picture: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> list[float]:
    """Mean absolute luma difference in each of SLICES horizontal bands (x264 slices are bands of rows)."""
    diff = np.abs(picture.astype(np.int16) - reference.astype(np.int16))
    return [float(band.mean()) for band in np.array_split(diff, SLICES, axis=0)]


@pytest.mark.integration
async def test_a_keyframe_sent_as_several_slices_starts_the_clip_whole(
    media: MediaLibrary, tmp_path: Path
) -> None:
    spec = camera(Personality(keyframe_slices=SLICES))
    out = tmp_path / "slices.mp4"
    result, _, _ = await capture_window(media, spec, out, length_s=2.0, clock_offset_s=0.0)
    assert result.complete, result.error

    first, samples = first_picture(out)
    # Every band of the first picture is the camera's picture (a missing slice decodes as a flat grey band).
    source = PictureSource(W, H, int(LOOP_S * FPS), FPS, "none")
    reference = source.frame(loop_index(first))[:H]
    luma = first.to_ndarray(format="yuv420p")[:H]
    assert max(band_errors(luma, reference)) < 6, band_errors(luma, reference)
    # One sample per picture: slices were joined, not written as pictures of their own.
    assert result.covered_start is not None and result.covered_end is not None
    covered = (result.covered_end - result.covered_start).total_seconds()
    assert samples == round(covered * FPS)
    # The thumbnail is whole too.
    assert result.thumbnail_jpeg is not None
    with av.open(io.BytesIO(result.thumbnail_jpeg), "r") as jpeg:
        thumb = next(jpeg.decode(video=0))
    expected = first.reformat(width=thumb.width, height=thumb.height).to_ndarray(format="gray")
    errors = band_errors(thumb.to_ndarray(format="gray"), expected)  # gray: both full range
    assert max(errors) < 6, errors


@pytest.mark.integration
async def test_a_good_camera_clock_gives_a_window_exact_to_a_frame(
    media: MediaLibrary, tmp_path: Path
) -> None:
    """ONVIF says 0.45 s for a camera whose clock is right (one-second resolution): the RTCP time stands."""
    spec = camera()  # camera clock = ours
    measured = 0.45
    result, start, end = await capture_window(
        media, spec, tmp_path / "good.mp4", length_s=2.0, clock_offset_s=measured
    )
    assert result.complete, result.error
    assert result.wallclock_source == "rtcp"
    assert result.wallclock_uncertainty_s == pytest.approx(CLOCK_OFFSET_ERROR_S + measured)
    assert result.covered_start is not None and result.covered_end is not None
    assert result.covered_start <= start and result.covered_end >= end  # complete: contains the window
    assert result.covered_end < end + timedelta(seconds=FRAME_S + 0.001)  # ends at the first frame >= end
    first, _ = first_picture(tmp_path / "good.mp4")
    # The first picture shows the time the manifest gives it, to the frame.
    assert loop_index(first) == camera_time_index(result.covered_start.timestamp())


@pytest.mark.integration
async def test_a_skewed_camera_clock_is_corrected_within_the_stated_uncertainty(
    media: MediaLibrary, tmp_path: Path
) -> None:
    spec = camera()
    spec.faults.clock_skew_s = 7.3  # the camera runs ahead of us; ONVIF measured it 0.3 s off
    measured = 7.6
    result, start, end = await capture_window(
        media, spec, tmp_path / "skewed.mp4", length_s=2.0, clock_offset_s=measured
    )
    assert result.complete, result.error
    assert result.wallclock_source == "rtcp_corrected"
    assert result.wallclock_uncertainty_s == CLOCK_OFFSET_ERROR_S
    assert result.covered_start is not None and result.covered_end is not None
    assert result.covered_start <= start and result.covered_end >= end
    first, _ = first_picture(tmp_path / "skewed.mp4")
    shown = loop_index(first)  # camera clock of the first picture, as frames in the loop
    stated = camera_time_index(result.covered_start.timestamp() + spec.faults.clock_skew_s)
    frames_off = min((shown - stated) % (LOOP_S * FPS), (stated - shown) % (LOOP_S * FPS))
    assert frames_off * FRAME_S == pytest.approx(measured - 7.3, abs=FRAME_S)
    assert frames_off * FRAME_S <= CLOCK_OFFSET_ERROR_S


@pytest.mark.integration
async def test_a_window_that_began_before_the_stream_is_not_complete(
    media: MediaLibrary, tmp_path: Path
) -> None:
    pool = SessionPool(open_timeout_s=3, read_timeout_s=2)
    spec = camera()
    start = datetime.now(UTC) - timedelta(seconds=3)  # not armed: only the current GOP (<= 1 s) is there
    end = datetime.now(UTC) + timedelta(seconds=1)
    try:
        async with serving(spec, media) as server:
            url = f"rtsp://admin:admin@{spec.host}:{server.port}/stream1"
            out = tmp_path / "late.mp4"
            result = await asyncio.to_thread(pool.capture, spec.camera_id, url, start, end, out)
    finally:
        await asyncio.to_thread(pool.close)
    assert result.error is None and result.covered_start is not None and result.covered_start > start
    assert not result.complete


def test_time_source_and_uncertainty_follow_the_onvif_offset() -> None:
    clock = WallClock(Fraction(1, 90_000), clock_offset_s=None)
    frame = Frame(b"", 90_000, 90_000, 0, True, 1000.3)  # pts 1 s, received at 1000.3 on our clock
    clock.observe(frame, None)
    assert (clock.source, clock.uncertainty_s, clock.wall(frame)) == ("local", LOCAL_DELAY_S, 1000.3)
    clock.observe(frame, 999_000_000)  # first SR: camera clock at pts 0 is 999.0 s
    cases = [  # (ONVIF offset, source, uncertainty, wall clock of the frame)
        (None, "rtcp", None, 1000.0),
        (0.0, "rtcp", CLOCK_OFFSET_ERROR_S, 1000.0),
        (-0.5, "rtcp", CLOCK_OFFSET_ERROR_S + 0.5, 1000.0),  # a good clock read at the worst moment
        (0.8, "rtcp_corrected", CLOCK_OFFSET_ERROR_S, 999.2),
        (-3600.0, "rtcp_corrected", CLOCK_OFFSET_ERROR_S, 4600.0),
    ]
    for offset, source, uncertainty, wall in cases:
        clock.clock_offset_s = offset
        assert (clock.source, clock.uncertainty_s) == (source, uncertainty), offset
        assert clock.wall(frame) == pytest.approx(wall), offset


def test_only_the_first_slice_of_a_picture_starts_it(media: MediaLibrary) -> None:
    profile = stream_profiles(camera(Personality(keyframe_slices=SLICES)))[0]
    clip = media.clip(profile, "none")
    key = clip.units[0]
    assert key.keyframe and len(key.nals) == SLICES
    params = b"".join(b"\x00\x00\x00\x01" + p for p in clip.parameter_sets)
    packets = [params + b"\x00\x00\x00\x01" + nal for nal in key.nals]  # as FFmpeg's parser splits them
    assert [starts_picture("h264", p) for p in packets] == [True] + [False] * (SLICES - 1)
    following = b"".join(b"\x00\x00\x01" + nal for nal in clip.units[1].nals)  # a P picture, all slices
    assert starts_picture("h264", following)
    assert [len(split_annexb(p)) for p in packets] == [3] * SLICES
    assert starts_picture("h264", b"not annex-b") and starts_picture("h264", b"")
    hevc = stream_profiles(camera(Personality(keyframe_slices=SLICES, h265_only=True)))[0]
    hevc_key = media.clip(hevc, "none").units[0]
    first, *rest = (b"\x00\x00\x01" + nal for nal in hevc_key.nals)
    assert starts_picture("hevc", first) and not any(starts_picture("hevc", p) for p in rest)
    assert len(rest) == SLICES - 1
