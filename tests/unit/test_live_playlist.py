"""The live playlist as a player reads it: parsed by the `m3u8` package (not ours), every tag a player needs,
a sliding window whose sequence numbers and discontinuity count stay consistent across reloads, the gap shown
where the index saw one, and the end once the session stopped."""

from __future__ import annotations

from datetime import UTC, datetime

import m3u8
import pytest

from collector.index.live import SegmentRow, target_duration
from collector.live.playlist import build

T0 = 1_800_000_000.0
KEY = "live/gangnam/live-1"


def seg(
    msn: int, *, start: float | None = None, disc: bool = False, before: int = 0, init: int = 0
) -> SegmentRow:
    """Segment `msn` (1 s each from T0 unless `start`); `before`: discontinuities up to and including it."""
    return SegmentRow(
        "live-1", msn, msn, f"{KEY}/{msn:08d}.m4s", f"{KEY}/init-{init}.mp4",
        T0 + msn if start is None else start, 1.0, 1000, disc, before, T0 + msn + 1.2,
    )  # fmt: skip


def presign(key: str) -> str:
    return f"https://s3.test/clips/{key}?X-Amz-Signature=abc"


def parse(text: str) -> m3u8.M3U8:
    return m3u8.loads(text)


def test_a_live_window_has_every_tag_a_player_needs() -> None:
    text = build([seg(5), seg(6), seg(7)], 1, False, presign)
    pl = parse(text)
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:7\n")
    assert (pl.version, pl.target_duration, pl.media_sequence, pl.is_endlist) == (7, 1, 5, False)
    assert pl.discontinuity_sequence == 0
    assert pl.is_independent_segments
    assert [s.uri for s in pl.segments] == [presign(f"{KEY}/{n:08d}.m4s") for n in (5, 6, 7)]
    assert [s.duration for s in pl.segments] == [1.0, 1.0, 1.0]
    assert [s.current_program_date_time for s in pl.segments] == [
        datetime.fromtimestamp(T0 + n, UTC) for n in (5, 6, 7)
    ]
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:") == 3  # on every segment, not only the first
    assert pl.segments[0].init_section.uri == presign(f"{KEY}/init-0.mp4")
    assert text.count("#EXT-X-MAP") == 1
    assert not any(s.discontinuity for s in pl.segments)


def test_a_gap_is_a_discontinuity_with_the_new_init_and_the_true_capture_time() -> None:
    after_gap = T0 + 20  # the camera came back 13 s later, with a new init segment
    text = build([seg(5), seg(6), seg(7, start=after_gap, disc=True, before=1, init=1)], 1, False, presign)
    pl = parse(text)
    assert [s.discontinuity for s in pl.segments] == [False, False, True]
    assert pl.segments[2].current_program_date_time == datetime.fromtimestamp(after_gap, UTC)
    assert pl.segments[2].init_section.uri == presign(f"{KEY}/init-1.mp4")
    assert text.count("#EXT-X-MAP") == 2


def test_the_discontinuity_count_follows_the_window_as_it_slides() -> None:
    """A reload after the gap slid to the front: the count of tags gone before the window goes up by one, so a
    player keeps its timelines apart (RFC 8216 6.2.2)."""
    first = parse(
        build([seg(6), seg(7, disc=True, before=1, init=1), seg(8, before=1, init=1)], 1, False, presign)
    )
    later = parse(build([seg(7, disc=True, before=1, init=1), seg(8, before=1, init=1)], 1, False, presign))
    assert first.discontinuity_sequence == 0 and first.segments[1].discontinuity
    assert (later.media_sequence, later.discontinuity_sequence) == (7, 1)
    assert not later.segments[0].discontinuity  # its tag has left the playlist with what preceded it


def test_a_stopped_session_ends_the_playlist() -> None:
    pl = parse(build([seg(3)], 1, True, presign))
    assert pl.is_endlist


def test_a_session_without_segments_yet_is_a_valid_empty_live_playlist() -> None:
    pl = parse(build([], 1, False, presign))
    assert (pl.segments, pl.media_sequence, pl.is_endlist) == ([], 0, False)


@pytest.mark.parametrize(("duration", "target"), [(1.0, 1), (1.04, 1), (0.4, 1), (1.6, 2), (2.0, 2)])
def test_no_segment_exceeds_the_target_duration(duration: float, target: int) -> None:
    """A 1 s GOP keeps the target at 1 s (hls.js holds back a multiple of it), a longer GOP raises it."""
    assert target_duration(duration) == target
