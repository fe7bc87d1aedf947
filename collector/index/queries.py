"""The API's reads of cameras and districts, filtered and paginated in the database (over a `Tx`).

Pages are keyset pages ordered by camera id: `after` is the last id of the previous page, so a page costs
the same wherever it starts and a camera added meanwhile is neither skipped nor repeated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from collector.index.store import AVAILABLE_STATES, CameraView
from collector.index.store_sql import CAMERA_COLUMNS, CAMERA_VIEW, camera_view
from collector.index.tx import Tx


@dataclass(frozen=True, slots=True)
class CameraFilter:
    district: str | None = None
    state: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.district is not None:
            clauses.append("district = ?")
            params.append(self.district)
        if self.state is not None:
            clauses.append("state = ?")
            params.append(self.state)
        if self.bbox is not None:
            clauses.append("lon >= ? AND lat >= ? AND lon <= ? AND lat <= ?")
            params.extend(self.bbox)
        return clauses, params


@dataclass(frozen=True, slots=True)
class DistrictRow:
    district: str
    agent_id: str | None
    agent_state: str | None
    agent_seen_at: float | None
    by_state: dict[str, int]

    @property
    def cameras(self) -> int:
        return sum(self.by_state.values())

    @property
    def availability(self) -> float | None:
        """Share of cameras online or degraded; None for a district without cameras."""
        if not self.cameras:
            return None
        return sum(n for s, n in self.by_state.items() if s in AVAILABLE_STATES) / self.cameras


def camera_page(tx: Tx, flt: CameraFilter, limit: int, after: str | None = None) -> list[CameraView]:
    """At most `limit` cameras matching `flt`, ordered by id, after the id `after`."""
    clauses, params = flt.where()
    if after is not None:
        clauses.append("camera_id > ?")
        params.append(after)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    # Column names and clauses are constants; values are parameters.
    rows = tx.query(
        f"SELECT {CAMERA_COLUMNS} FROM ({CAMERA_VIEW}) v{where} ORDER BY camera_id LIMIT ?",  # noqa: S608
        (*params, limit),
    )
    return [camera_view(r) for r in rows]


def cameras_by_id(tx: Tx, camera_ids: Iterable[str]) -> dict[str, CameraView]:
    ids = sorted(set(camera_ids))
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    rows = tx.query(
        f"SELECT {CAMERA_COLUMNS} FROM ({CAMERA_VIEW}) v WHERE camera_id IN ({marks})",  # noqa: S608
        tuple(ids),
    )
    return {r[0]: camera_view(r) for r in rows}


def camera_positions(tx: Tx) -> list[tuple[str, str, float, float]]:
    """(camera id, owning district, lat, lon) of every camera with a position."""
    rows = tx.query(
        "SELECT camera_id, district, lat, lon FROM cameras WHERE lat IS NOT NULL AND lon IS NOT NULL"
    )
    return [(r[0], r[1], float(r[2]), float(r[3])) for r in rows]


def cameras_stamp(tx: Tx) -> tuple[int, float]:
    """(count, newest meta update) of the cameras table: changes whenever a camera appears or moves."""
    [(count, newest)] = tx.query("SELECT COUNT(*), MAX(meta_updated_at) FROM cameras")
    return int(count), float(newest or 0.0)


def districts(tx: Tx, slugs: Iterable[str]) -> list[DistrictRow]:
    """Each district of `slugs` with its agent's presence and its cameras by state (as the cameras show)."""
    agents = {
        r[0]: (r[1], r[2], float(r[3]))
        for r in tx.query("SELECT district, agent_id, state, sent_at FROM agents")
    }
    counts: dict[str, dict[str, int]] = {}
    for district, state, n in tx.query(
        f"SELECT district, state, COUNT(*) FROM ({CAMERA_VIEW}) v GROUP BY district, state"  # noqa: S608
    ):
        counts.setdefault(district, {})[state] = int(n)
    out = []
    for slug in slugs:
        agent_id, state, seen = agents.get(slug, (None, None, None))
        out.append(DistrictRow(slug, agent_id, state, seen, counts.get(slug, {})))
    return out


def camera_points(tx: Tx, district: str | None) -> list[tuple[str, str, float, float, str]]:
    """(camera id, district, lat, lon, state) of every camera with a position, ordered by id: one row each,
    for a map of the whole city (the state as `CAMERA_VIEW` judges it: unknown while its agent is offline)."""
    where = " AND district = ?" if district is not None else ""
    rows = tx.query(
        f"SELECT camera_id, district, lat, lon, state FROM ({CAMERA_VIEW}) v "  # noqa: S608
        f"WHERE lat IS NOT NULL AND lon IS NOT NULL{where} ORDER BY camera_id",
        (district,) if district is not None else (),
    )
    return [(r[0], r[1], float(r[2]), float(r[3]), r[4]) for r in rows]
