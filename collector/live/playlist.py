"""An HLS media playlist (RFC 8216, version 7, fragmented MP4) built from the index's segments of a session.

Never an object in the bucket: each fetch builds it anew from the index, with presigned URLs of the immutable
init and segment objects. A sliding window of the newest segments; media sequence numbers are the index's
(consecutive per session); a discontinuity tag where the index saw a gap, and EXT-X-DISCONTINUITY-SEQUENCE
counting the tags that slid out of the window; EXT-X-PROGRAM-DATE-TIME on every segment (its capture time),
so a player and a person see how old each picture is; EXT-X-ENDLIST once the session stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from collector.index.live import SegmentRow

MIME = "application/vnd.apple.mpegurl"


def build(segments: Sequence[SegmentRow], target_s: int, ended: bool, url: Callable[[str], str]) -> str:
    """The playlist of `segments` (a session's newest, in order); `url(key)` presigns an object key."""
    first = segments[0] if segments else None
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{target_s}",
        f"#EXT-X-MEDIA-SEQUENCE:{first.msn if first else 0}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{_discontinuity_sequence(first)}",
        "#EXT-X-INDEPENDENT-SEGMENTS",  # every segment starts with a keyframe
    ]
    init_key = None
    for seg in segments:
        if seg.discontinuity and seg is not first:
            lines.append("#EXT-X-DISCONTINUITY")
        if seg.init_key != init_key:
            lines.append(f'#EXT-X-MAP:URI="{url(seg.init_key)}"')
            init_key = seg.init_key
        lines += [
            f"#EXT-X-PROGRAM-DATE-TIME:{_iso(seg.started_at)}",
            f"#EXTINF:{seg.duration_s:.3f},",
            url(seg.object_key),
        ]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _discontinuity_sequence(first: SegmentRow | None) -> int:
    """The discontinuity tags before the window (the first segment's own tag is not shown: nothing precedes
    it in the playlist)."""
    return 0 if first is None else first.discontinuities


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
