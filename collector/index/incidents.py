"""Incidents, their positions and the clip requests made under them (migration 0008), over a `Tx`, so an
incident's change, its commands and its audit record commit together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from collector.index.tx import Tx, params


@dataclass(frozen=True, slots=True)
class Position:
    lat: float
    lon: float
    at: float
    district: str
    added_by: str


@dataclass(frozen=True, slots=True)
class IncidentRow:
    incident_id: str
    agency: str
    incident_no: str
    service: str
    kind: str
    purpose: str
    district: str | None
    radius_m: float
    occurred_at: float
    opened_at: float
    opened_by: str
    expires_at: float
    closed_at: float | None = None
    closed_by: str | None = None
    positions: tuple[Position, ...] = ()

    def state(self, now: float) -> tuple[str, str | None]:
        """("open", None), or ("closed", "closed" | "expired"): the time limit ends an incident too."""
        if self.closed_at is not None and self.closed_at <= self.expires_at:
            return "closed", "closed"
        if now >= self.expires_at:
            return "closed", "expired"
        return "open", None


@dataclass(frozen=True, slots=True)
class ClipRequestRow:
    request_id: str
    incident_id: str
    camera_id: str
    district: str
    agency: str
    requested_by: str
    service: str
    priority: str
    start_at: float
    end_at: float
    requested_at: float


@dataclass(frozen=True, slots=True)
class ClipState:
    """A clip request with what the agent reported so far (`status` None: no ClipUpdate yet)."""

    request: ClipRequestRow
    status: str | None
    reason: str | None
    object_key: str | None
    thumbnail_key: str | None
    manifest_key: str | None
    size_bytes: int | None
    sha256: str | None
    covered_start: float | None
    covered_end: float | None
    updated_at: float | None
    footage: str | None = None


_INCIDENT_COLUMNS = (
    "incident_id, agency, incident_no, service, kind, purpose, district, radius_m, occurred_at, opened_at, "
    "opened_by, expires_at, closed_at, closed_by"
)
_REQUEST_COLUMNS = (
    "request_id, incident_id, camera_id, district, agency, requested_by, service, priority, "
    "start_at, end_at, requested_at"
)
_CLIP_COLUMNS = (
    "c.status, c.reason, c.object_key, c.thumbnail_key, c.manifest_key, c.size_bytes, c.sha256, "
    "c.covered_start, c.covered_end, c.updated_at, c.footage"
)


def incident_by_number(tx: Tx, agency: str, incident_no: str) -> str | None:
    rows = tx.query(
        "SELECT incident_id FROM incidents WHERE agency = ? AND incident_no = ?", (agency, incident_no)
    )
    return str(rows[0][0]) if rows else None


def insert_incident(tx: Tx, row: IncidentRow) -> None:
    values = params(row)[:-1]  # without positions
    tx.execute(
        f"INSERT INTO incidents ({_INCIDENT_COLUMNS}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608
        values,
    )
    for position in row.positions:
        add_position(tx, row.incident_id, position)


def add_position(tx: Tx, incident_id: str, p: Position) -> None:
    tx.execute(
        "INSERT INTO incident_positions (incident_id, seq, lat, lon, at, district, added_by) "
        "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM incident_positions WHERE incident_id = ?",
        (incident_id, p.lat, p.lon, p.at, p.district, p.added_by, incident_id),
    )


def close_incident(tx: Tx, incident_id: str, at: float, by: str) -> bool:
    """Close an open incident; False when it was closed already."""
    changed = tx.execute(
        "UPDATE incidents SET closed_at = ?, closed_by = ? WHERE incident_id = ? AND closed_at IS NULL",
        (at, by, incident_id),
    )
    return changed == 1


def incident(tx: Tx, incident_id: str, *, lock: bool = False) -> IncidentRow | None:
    """The incident with its positions in order, in one query; `lock` holds its row until the transaction
    ends."""
    suffix = tx.for_update() + " OF i" if lock and tx.for_update() else ""
    rows = tx.query(
        f"SELECT {_prefixed('i', _INCIDENT_COLUMNS)}, p.lat, p.lon, p.at, p.district, p.added_by "  # noqa: S608
        "FROM incidents i LEFT JOIN incident_positions p ON p.incident_id = i.incident_id "
        f"WHERE i.incident_id = ? ORDER BY p.seq{suffix}",
        (incident_id,),
    )
    if not rows:
        return None
    n = len(rows[0]) - 5
    positions = tuple(
        Position(float(r[n]), float(r[n + 1]), float(r[n + 2]), r[n + 3], r[n + 4])
        for r in rows
        if r[n] is not None
    )
    return _incident(rows[0][:n], positions)


def agency_incidents(tx: Tx, agency: str, limit: int, offset: int) -> list[IncidentRow]:
    """An agency's incidents, newest first (positions are not loaded)."""
    rows = tx.query(
        f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE agency = ? "  # noqa: S608
        "ORDER BY opened_at DESC, incident_id LIMIT ? OFFSET ?",
        (agency, limit, offset),
    )
    return [_incident(r, ()) for r in rows]


def insert_clip_requests(tx: Tx, rows: Sequence[ClipRequestRow]) -> None:
    values = [params(row) for row in rows]
    marks = ", ".join("?" * len(fields(ClipRequestRow)))
    tx.executemany(f"INSERT INTO clip_requests ({_REQUEST_COLUMNS}) VALUES ({marks})", values)  # noqa: S608


def clip_state(tx: Tx, request_id: str) -> ClipState | None:
    rows = tx.query(
        f"SELECT {_prefixed('r')}, {_CLIP_COLUMNS} FROM clip_requests r "  # noqa: S608
        "LEFT JOIN clips c ON c.request_id = r.request_id WHERE r.request_id = ?",
        (request_id,),
    )
    return _clip_state(rows[0]) if rows else None


@dataclass(frozen=True, slots=True)
class ClipFilter:
    agency: str
    camera_id: str | None = None
    incident_id: str | None = None
    since: float | None = None
    until: float | None = None


def clip_states(tx: Tx, flt: ClipFilter, limit: int, offset: int) -> list[ClipState]:
    """An agency's clip requests matching `flt` (by request time), newest first."""
    clauses: list[str] = ["r.agency = ?"]
    params: list[Any] = [flt.agency]
    for clause, value in (
        ("r.camera_id = ?", flt.camera_id),
        ("r.incident_id = ?", flt.incident_id),
        ("r.requested_at >= ?", flt.since),
        ("r.requested_at < ?", flt.until),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    rows = tx.query(
        f"SELECT {_prefixed('r')}, {_CLIP_COLUMNS} FROM clip_requests r "  # noqa: S608
        f"LEFT JOIN clips c ON c.request_id = r.request_id WHERE {' AND '.join(clauses)} "
        "ORDER BY r.requested_at DESC, r.request_id LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    return [_clip_state(r) for r in rows]


def _prefixed(alias: str, columns: str = _REQUEST_COLUMNS) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _incident(r: tuple[Any, ...], positions: tuple[Position, ...]) -> IncidentRow:
    return IncidentRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], float(r[7]), float(r[8]), float(r[9]), r[10], float(r[11]),
        None if r[12] is None else float(r[12]), r[13], positions,
    )  # fmt: skip


def _clip_state(r: tuple[Any, ...]) -> ClipState:
    req = ClipRequestRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], float(r[8]), float(r[9]), float(r[10])
    )
    (status, reason, obj, thumb, manifest, size, sha, c_start, c_end, updated, footage) = r[11:]
    return ClipState(
        req, status, reason, obj, thumb, manifest, None if size is None else int(size), sha,
        None if c_start is None else float(c_start), None if c_end is None else float(c_end),
        None if updated is None else float(updated), footage,
    )  # fmt: skip
