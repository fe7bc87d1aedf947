"""The fragmented MP4 writer and crash recovery, fed with packets of small clips encoded here (no RTSP)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
import subprocess
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from agent.clips.thumbnail import keyframe_jpeg
from agent.clips.writer import FragmentedMp4Writer, Frame, box_spans, progress_path, recover_partial

W, H, FPS, GOP, FRAMES = 320, 180, 25, 25, 100
T0 = 1_780_000_000.0  # wall clock of pts 0 in these tests
needs_ffprobe = pytest.mark.skipif(
    shutil.which("ffprobe") is None, reason="ffprobe (Debian ffmpeg) not installed"
)


def encode_source(path: Path, codec: str) -> None:
    """A 4 s clip, GOP 25, no B-frames: frame i shows grey level i so frames can be told apart."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265" if codec == "hevc" else "libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0"
        key = "x265-params" if codec == "hevc" else "x264-params"
        stream.codec_context.options = {key: params + (":log-level=error" if codec == "hevc" else "")}
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(
                np.full((H * 3 // 2, W), 20 + 2 * i, np.uint8), format="yuv420p"
            )
            frame.pts = i
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.fixture(scope="module", params=["h264", "hevc"])
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / f"source-{request.param}.mp4"
    encode_source(path, request.param)
    return path


def packets(path: Path) -> tuple[Any, list[Frame]]:
    """The stream (kept open for its codec parameters) and its packets as Frames."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    frames = [
        Frame(bytes(p), p.pts, p.dts, p.duration or 0, p.is_keyframe, 0.0)
        for p in container.demux(stream)
        if p.size
    ]
    return stream, frames


def wall(frame: Frame, time_base: Fraction) -> float:
    pts = frame.pts if frame.pts is not None else frame.dts
    return T0 + float((pts or 0) * time_base)


def write_all(out: Path, stream: Any, frames: list[Frame], on_write: Any = None) -> FragmentedMp4Writer:
    writer = FragmentedMp4Writer(out, stream, time_base=stream.time_base, codec=stream.codec_context.name)
    step = 1 / FPS
    for frame in frames:
        start = wall(frame, stream.time_base)
        writer.write(frame, start, start + step)
        if on_write:
            on_write(writer)
    writer.close()
    return writer


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def demux_facts(path: Path) -> tuple[list[bool], list[int]]:
    with av.open(str(path)) as container:
        pkts = [p for p in container.demux(video=0) if p.size]
        dts = [p.dts for p in pkts]
        assert None not in dts
        return [p.is_keyframe for p in pkts], [d for d in dts if d is not None]


@pytest.mark.integration  # ffprobe runs as a subprocess
@needs_ffprobe
def test_clip_plays_from_first_keyframe_with_hash_of_written_bytes(source: Path, tmp_path: Path) -> None:
    stream, frames = packets(source)
    # Join mid-GOP (frames 10..) like a live stream; the muxer must start at the keyframe of frame 25.
    # The first keyframe lacks a pts, as FFmpeg's RTSP demuxer hands it out.
    first_key = frames[25]
    frames = [*frames[10:25], Frame(first_key.data, None, first_key.dts, 0, True, 0.0), *frames[26:]]
    out = tmp_path / "clip.mp4"
    writer = write_all(out, stream, frames)

    info = probe(out)
    video = info["streams"][0]
    codec = stream.codec_context.name
    assert video["codec_name"] == codec and (video["width"], video["height"]) == (W, H)
    if codec == "hevc":
        assert video["codec_tag_string"] == "hvc1"
    assert float(info["format"]["duration"]) == pytest.approx(3.0, abs=0.01)  # frames 25..99
    keys, dts = demux_facts(out)
    assert keys[0] and len(keys) == 75
    assert all(b > a for a, b in itertools.pairwise(dts))
    assert writer.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert writer.size_bytes == out.stat().st_size
    progress = json.loads(progress_path(out).read_text())
    assert progress["final"] is True and progress["bytes"] == out.stat().st_size
    assert datetime.fromisoformat(progress["covered_start"]) == datetime.fromtimestamp(T0 + 1.0, UTC)
    assert datetime.fromisoformat(progress["covered_end"]) == datetime.fromtimestamp(T0 + 4.0, UTC)


def test_file_grows_by_whole_fragments_and_progress_follows(source: Path, tmp_path: Path) -> None:
    stream, frames = packets(source)
    out = tmp_path / "clip.mp4"
    seen: list[tuple[int, float]] = []

    def check(writer: FragmentedMp4Writer) -> None:
        data = out.read_bytes()
        spans = box_spans(data)
        assert (spans[-1][2] if spans else 0) == len(data), "the file must end on a whole box"
        assert [kind for kind, _, _ in spans][-1:] != [b"moof"], "a moof is never written without its mdat"
        progress = json.loads(progress_path(out).read_text())
        end = datetime.fromisoformat(progress["covered_end"]).timestamp()
        if not seen or seen[-1] != (progress["bytes"], end):
            seen.append((progress["bytes"], end))
        assert progress["bytes"] <= len(data)

    write_all(out, stream, frames, check)
    # The header, then one update per completed GOP: (bytes, covered_end) grow together.
    assert [round(end - T0, 2) for _, end in seen] == [0.0, 1.0, 2.0, 3.0]
    assert all(b[0] > a[0] for a, b in itertools.pairwise(seen))


def test_repairs_missing_and_non_increasing_timestamps(tmp_path: Path) -> None:
    src = tmp_path / "source.mp4"
    encode_source(src, "h264")
    stream, frames = packets(src)
    broken = []
    for i, f in enumerate(frames[:50]):
        dts = frames[i - 1].dts if i in (5, 30) else f.dts  # duplicated dts
        broken.append(Frame(f.data, None if i == 7 else f.pts, None if i == 8 else dts, 0, f.keyframe, 0.0))
    out = tmp_path / "clip.mp4"
    write_all(out, stream, broken)
    keys, repaired = demux_facts(out)
    assert keys[0] and len(repaired) == 50
    assert all(b > a for a, b in itertools.pairwise(repaired))


@pytest.mark.integration  # ffprobe runs as a subprocess
@needs_ffprobe
def test_recover_partial_cuts_to_last_whole_fragment_with_its_range(source: Path, tmp_path: Path) -> None:
    stream, frames = packets(source)
    out = tmp_path / "clip.mp4"
    boundaries: list[int] = []
    write_all(out, stream, frames, lambda w: boundaries.append(w.size_bytes))
    full = out.read_bytes()
    third_fragment_end = sorted(set(boundaries))[3]  # header, then fragments ending at 1 s, 2 s, 3 s
    fourth_mdat = next(start for kind, start, _ in box_spans(full, third_fragment_end) if kind == b"mdat")
    out.write_bytes(full[: fourth_mdat + 100])  # killed while writing the fourth fragment's media

    valid, start, end = recover_partial(out)
    assert valid == third_fragment_end
    assert start == datetime.fromtimestamp(T0, UTC)
    assert end is not None and (end - start).total_seconds() == pytest.approx(3.0, abs=0.001)
    with out.open("r+b") as f:
        f.truncate(valid)
    assert float(probe(out)["format"]["duration"]) == pytest.approx(3.0, abs=0.01)
    keys, _ = demux_facts(out)
    assert len(keys) == 75 and keys[0]


def test_recover_partial_without_a_whole_fragment_or_progress(tmp_path: Path) -> None:
    src = tmp_path / "source.mp4"
    encode_source(src, "h264")
    stream, frames = packets(src)
    out = tmp_path / "clip.mp4"
    write_all(out, stream, frames)
    full = out.read_bytes()
    header_end = next(end for kind, _, end in box_spans(full) if kind == b"moov")
    out.write_bytes(full[: header_end + 100])
    assert recover_partial(out) == (0, None, None)
    out.write_bytes(full)
    progress_path(out).unlink()
    valid, start, end = recover_partial(out)
    assert valid > header_end and (start, end) == (None, None)  # bytes known, range unknown


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_thumbnail_is_a_small_jpeg_of_the_first_keyframe(tmp_path: Path, codec: str) -> None:
    src = tmp_path / "source.mp4"
    encode_source(src, codec)
    stream, frames = packets(src)
    jpeg = keyframe_jpeg(codec, stream.codec_context.extradata, frames[0].data, width=160)
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    with av.open(io.BytesIO(jpeg), "r") as image:
        picture = next(image.decode(video=0))
    assert (picture.width, picture.height) == (160, 90)
    with av.open(str(src)) as container:
        original = next(container.decode(video=0)).to_ndarray(format="gray")  # full range, like JPEG
    assert abs(float(picture.to_ndarray(format="gray").mean()) - float(original.mean())) < 2
    assert keyframe_jpeg(codec, None, b"\x00\x00\x01garbage") is None
