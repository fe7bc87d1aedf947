"""Live sessions and their segments (migration 0010), over a `Tx`: a session's start, its command and its
audit record commit together; a segment is listed in the transaction that stores it.

A segment gets the session's next HLS media sequence number (`msn`), so a playlist's numbers stay consecutive
whatever the agent's own `sequence` did; a segment after a hole in the sequence, a gap in capture time or a
new init segment is marked a discontinuity, so a player is never told that footage is continuous when it is
not. A segment older than one already listed (or listed twice: QoS 1) is not listed again.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Literal

from collector.index.tx import Tx
from contract.messages import LiveSegmentInfo

# A segment that starts later than the previous one's end by more than this is after a gap in capture.
GAP_TOLERANCE_S = 0.5


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    incident_id: str
    camera_id: str
    district: str
    agency: str
    account: str
    stream: str
    purpose: str
    service: str
    state: str  # starting (no segment yet), live, stopped
    stop_reason: str | None
    created_at: float
    until_at: float
    last_fetch_at: float
    first_segment_at: float | None = None
    stopped_at: float | None = None
    segments: int = 0
    discontinuities: int = 0
    last_sequence: int | None = None
    target_s: int = 1


@dataclass(frozen=True, slots=True)
class SegmentRow:
    session_id: str
    msn: int
    sequence: int
    object_key: str
    init_key: str
    started_at: float
    duration_s: float
    size_bytes: int
    discontinuity: bool
    discontinuities: int  # tags up to and including this segment's
    listed_at: float


_SESSION_COLUMNS = ", ".join(f.name for f in fields(SessionRow))
_SEGMENT_COLUMNS = ", ".join(f.name for f in fields(SegmentRow))
# Constant column names only (S608).
_SESSIONS = f"SELECT {_SESSION_COLUMNS} FROM live_sessions"  # noqa: S608
_SEGMENTS = f"SELECT {_SEGMENT_COLUMNS} FROM live_segments"  # noqa: S608
_SESSION_MARKS = ", ".join("?" * len(fields(SessionRow)))
_SEGMENT_MARKS = ", ".join("?" * len(fields(SegmentRow)))
_INSERT_SESSION = f"INSERT INTO live_sessions ({_SESSION_COLUMNS}) VALUES ({_SESSION_MARKS})"  # noqa: S608
_INSERT_SEGMENT = f"INSERT INTO live_segments ({_SEGMENT_COLUMNS}) VALUES ({_SEGMENT_MARKS})"  # noqa: S608
Listing = Literal["listed", "duplicate", "late", "stopped"]


def insert_session(tx: Tx, row: SessionRow) -> None:
    tx.execute(_INSERT_SESSION, astuple(row))


def session(tx: Tx, session_id: str, *, lock: bool = False) -> SessionRow | None:
    suffix = tx.for_update() if lock else ""
    rows = tx.query(_SESSIONS + " WHERE session_id = ?" + suffix, (session_id,))
    return _session(rows[0]) if rows else None


def active(tx: Tx) -> list[SessionRow]:
    """The sessions not stopped yet, oldest first."""
    rows = tx.query(_SESSIONS + " WHERE state <> 'stopped' ORDER BY created_at")
    return [_session(r) for r in rows]


def lock_agency(tx: Tx, agency: str) -> None:
    """Serialise starts of one agency's sessions until the commit, so that two at once cannot both pass its
    limit (SQLite: the write transaction already holds the database's write lock)."""
    if tx.engine == "postgres":
        tx.query("SELECT pg_advisory_xact_lock(hashtext(?))", (f"live:{agency}",))


def active_of(tx: Tx, agency: str) -> list[SessionRow]:
    rows = tx.query(_SESSIONS + " WHERE agency = ? AND state <> 'stopped'", (agency,))
    return [_session(r) for r in rows]


def active_counts(tx: Tx) -> dict[str, int]:
    """Sessions not stopped, by agency."""
    rows = tx.query("SELECT agency, COUNT(*) FROM live_sessions WHERE state <> 'stopped' GROUP BY agency")
    return {str(agency): int(n) for agency, n in rows}


def touch(tx: Tx, session_id: str, now: float, every_s: float) -> None:
    """Note a playlist fetch (written at most every `every_s`: a player reloads every second)."""
    tx.execute(
        "UPDATE live_sessions SET last_fetch_at = ? WHERE session_id = ? AND last_fetch_at <= ?",
        (now, session_id, now - every_s),
    )


def extend(tx: Tx, session_id: str, until: float) -> bool:
    changed = tx.execute(
        "UPDATE live_sessions SET until_at = ? WHERE session_id = ? AND state <> 'stopped'",
        (until, session_id),
    )
    return changed > 0


def stop(tx: Tx, session_id: str, reason: str, now: float) -> bool:
    """Stop a session unless it is stopped already (the first reason stays); whether this call stopped it."""
    changed = tx.execute(
        "UPDATE live_sessions SET state = 'stopped', stop_reason = ?, stopped_at = ? "
        "WHERE session_id = ? AND state <> 'stopped'",
        (reason, now, session_id),
    )
    return changed > 0


def add_segment(
    tx: Tx, info: LiveSegmentInfo, current: SessionRow, now: float
) -> tuple[Listing, SegmentRow | None]:
    """List a segment of `current` (read with `session(..., lock=True)` in this transaction): the outcome and
    the row listed."""
    if current.last_sequence is not None and info.sequence <= current.last_sequence:
        exists = tx.query(
            "SELECT 1 FROM live_segments WHERE session_id = ? AND sequence = ?",
            (current.session_id, info.sequence),
        )
        return ("duplicate" if exists else "late"), None
    if current.state == "stopped":
        return "stopped", None
    disc = current.segments > 0 and _discontinuous(tx, info, current)
    msn = current.segments
    row = SegmentRow(
        current.session_id, msn, info.sequence, info.object_key, info.init_key, info.started_at.timestamp(),
        info.duration_s, info.size_bytes, disc, current.discontinuities + disc, now,
    )  # fmt: skip
    tx.execute(_INSERT_SEGMENT, astuple(row))
    target = max(current.target_s, target_duration(info.duration_s))
    tx.execute(
        "UPDATE live_sessions SET segments = ?, discontinuities = ?, last_sequence = ?, target_s = ?, "
        "state = 'live', first_segment_at = COALESCE(first_segment_at, ?) WHERE session_id = ?",
        (msn + 1, row.discontinuities, info.sequence, target, now, current.session_id),
    )
    return "listed", row


def _discontinuous(tx: Tx, info: LiveSegmentInfo, current: SessionRow) -> bool:
    if info.discontinuity or info.sequence != (current.last_sequence or 0) + 1:
        return True
    prev = tx.query(
        "SELECT started_at, duration_s, init_key FROM live_segments WHERE session_id = ? AND msn = ?",
        (current.session_id, current.segments - 1),
    )
    if not prev:  # deleted by the janitor meanwhile: nothing to compare with
        return False
    started, duration, init_key = prev[0]
    gap = info.started_at.timestamp() - (float(started) + float(duration))
    return init_key != info.init_key or abs(gap) > GAP_TOLERANCE_S


def target_duration(duration_s: float) -> int:
    """EXT-X-TARGETDURATION: every EXTINF rounded to the nearest integer must not exceed it (RFC 8216)."""
    return max(1, int(duration_s + 0.5))


def window(tx: Tx, session_id: str, count: int) -> list[SegmentRow]:
    """The newest `count` segments of a session, in playlist order."""
    rows = tx.query(
        _SEGMENTS + " WHERE session_id = ? ORDER BY msn DESC LIMIT ?",
        (session_id, count),
    )
    return [_segment(r) for r in reversed(rows)]


def expired_segments(tx: Tx, listed_before: float, limit: int) -> list[SegmentRow]:
    rows = tx.query(
        _SEGMENTS + " WHERE listed_at < ? ORDER BY listed_at LIMIT ?",
        (listed_before, limit),
    )
    return [_segment(r) for r in rows]


def unused_inits(tx: Tx, rows: list[SegmentRow], listed_before: float) -> list[str]:
    """The init keys of `rows` that no segment listed since `listed_before` needs (deleted with them)."""
    unused = []
    for session_id, init_key in sorted({(r.session_id, r.init_key) for r in rows}):
        newer = tx.query(
            "SELECT 1 FROM live_segments WHERE session_id = ? AND init_key = ? AND listed_at >= ? LIMIT 1",
            (session_id, init_key, listed_before),
        )
        if not newer:
            unused.append(init_key)
    return unused


def delete_segments(tx: Tx, rows: list[SegmentRow]) -> None:
    tx.executemany(
        "DELETE FROM live_segments WHERE session_id = ? AND msn = ?", [(r.session_id, r.msn) for r in rows]
    )


def _session(r: tuple[object, ...]) -> SessionRow:
    return SessionRow(*r)  # type: ignore[arg-type]


def _segment(r: tuple[object, ...]) -> SegmentRow:
    values = list(r)
    values[8] = bool(values[8])  # SQLite stores a boolean as 0/1
    return SegmentRow(*values)  # type: ignore[arg-type]
