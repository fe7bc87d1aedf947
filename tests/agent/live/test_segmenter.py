"""CMAF segments from stream-copied frames: each starts with a keyframe, plays on its own after the init
segment, lasts whole GOPs (at least min_segment_s), and carries its first frame's wall clock."""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np
import pytest

from agent.clips.stream import InputStream, WallClock
from agent.clips.writer import Frame
from agent.live.segmenter import InitPiece, Piece, Segmenter, SegmentPiece

FPS, GOP, FRAMES = 25, 12, 60  # a keyframe every 0.48 s; 2.4 s in all
T0 = 1_700_000_000.0  # the camera's clock at pts 0 (an RTCP report said so)


@pytest.fixture(scope="module")
def source() -> bytes:
    """A small H.264 MP4, as a camera's stream would be demuxed."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        options = {"g": str(GOP), "keyint_min": str(GOP), "bf": "0", "sc_threshold": "0"}
        stream = container.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(np.full((96, 160, 3), i * 4 % 256, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def demux(source: bytes) -> tuple[InputStream, list[Frame]]:
    """The source as the RTSP session hands it over: the stream's description and its frames."""
    container: Any = av.open(io.BytesIO(source))
    stream = container.streams.video[0]
    holder = av.open(io.BytesIO(), "w", format="mp4")  # owns the template, as the session's does
    cc = stream.codec_context
    info = InputStream(holder.add_stream_from_template(stream), "h264", cc.width, cc.height, stream.time_base,
                       cc.extradata, 1 / FPS)  # fmt: skip
    packets = [p for p in container.demux(stream) if p.size]
    frames = [Frame(bytes(p), p.pts, p.dts, p.duration or 0, p.is_keyframe, T0) for p in packets]
    container.close()
    return info, frames


def segment(info: InputStream, frames: list[Frame], min_segment_s: float) -> list[Piece]:
    clock = WallClock(info.time_base, clock_offset_s=0.0)
    for frame in frames:
        clock.observe(frame, int(T0 * 1e6))
    segmenter = Segmenter(info, clock, min_segment_s)
    return [piece for frame in frames for piece in segmenter.push(frame)] + segmenter.close()


def frame_count(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize(("min_segment_s", "gops"), [(0.4, 1), (1.0, 3)])
def test_segments_are_whole_gops_that_play_on_their_own(
    source: bytes, min_segment_s: float, gops: int
) -> None:
    pieces = segment(*demux(source), min_segment_s)
    assert isinstance(pieces[0], InitPiece) and not any(isinstance(p, InitPiece) for p in pieces[1:])
    init, segments = pieces[0].data, [p for p in pieces[1:] if isinstance(p, SegmentPiece)]
    assert init[4:8] == b"ftyp" and b"moov" in init and b"moof" not in init
    per_segment = gops * GOP
    counts = [frame_count(init + s.data) for s in segments]  # each decodes after the init segment alone
    assert counts[:-1] == [per_segment] * (len(segments) - 1)
    assert sum(counts) == FRAMES  # the last one is what was left when the input ended
    assert [s.duration_s for s in segments[:-1]] == pytest.approx([per_segment / FPS] * (len(segments) - 1))
    assert segments[-1].duration_s == pytest.approx(counts[-1] / FPS)
    # Each starts where its first frame was captured: the camera's clock at that frame.
    assert [s.started_at for s in segments] == pytest.approx(
        [T0 + n * per_segment / FPS for n in range(len(segments))]
    )
    assert frame_count(init + b"".join(s.data for s in segments)) == FRAMES
    assert all(s.data[4:8] == b"moof" for s in segments)


def test_frames_before_the_first_keyframe_are_dropped(source: bytes) -> None:
    info, frames = demux(source)
    pieces = segment(info, frames[GOP // 2 :], 0.4)  # joined mid-GOP
    init, segments = pieces[0].data, [p for p in pieces if isinstance(p, SegmentPiece)]
    assert frame_count(init + b"".join(s.data for s in segments)) == FRAMES - GOP
    assert segments[0].started_at == pytest.approx(T0 + GOP / FPS)
