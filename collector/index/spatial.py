"""Distances on the Earth and the nearest cameras to a point, in process.

`NearestIndex` keeps the cameras in a grid of cells about `cell_m` metres square, stored as flat arrays sorted
by cell (a cell row's span of cells is one slice). A query reads the block of cells around the point, growing
it until the k-th nearest camera found is closer than anything outside the block can be, then ranks the block
by exact haversine distance (ties by camera id). The answer is therefore exactly a brute-force scan's.
Distances are on a sphere of the Earth's mean radius, as PostGIS's geography KNN (`<->`) measures them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import NamedTuple, Self

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M = 6_371_008.7714  # mean radius (2a + b) / 3 of WGS84: the sphere PostGIS geography uses
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180
SAFETY = 1 - 1e-9  # rounding in a distance must never let a closer camera outside the block slip by

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Block = tuple[tuple[int, int], tuple[int, int]]  # (first row, last row), (first column, last column)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points (degrees)."""
    return float(haversine_many(lat1, lon1, np.asarray(lat2), np.asarray(lon2)))


def haversine_many(lat: float, lon: float, lats: Floats, lons: Floats) -> Floats:
    """haversine_m from one point to many (arrays of degrees)."""
    p2 = np.radians(lats)
    return _haversine(np.radians(lat), np.radians(lon), p2, np.radians(lons), np.cos(p2))


def _haversine(p1: Floats, l1: Floats, p2: Floats, l2: Floats, cos_p2: Floats) -> Floats:
    """The one copy of the formula, over radians (the index keeps its cameras' radians and cosines)."""
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * cos_p2 * np.sin((l2 - l1) / 2) ** 2
    distances: Floats = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(1.0, h)))
    return distances


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from the first point to the second: 0 = north, 90 = east, in [0, 360)."""
    return float(bearings_many(lat1, lon1, np.asarray(lat2), np.asarray(lon2)))


def bearings_many(lat: float, lon: float, lats: Floats, lons: Floats) -> Floats:
    """bearing_deg from one point to many (arrays of degrees)."""
    p1, p2 = np.radians(lat), np.radians(lats)
    dl = np.radians(lons - lon)
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    bearings: Floats = np.degrees(np.arctan2(y, x)) % 360.0
    return bearings


@dataclass(frozen=True, slots=True)
class CameraPoint:
    camera_id: str
    district: str
    lat: float
    lon: float


class Neighbour(NamedTuple):
    """A camera found near a point (a tuple: built twenty at a time on the hot path)."""

    camera_id: str
    district: str
    lat: float
    lon: float
    distance_m: float
    bearing_deg: float


@dataclass(frozen=True, slots=True)
class _Grid:
    """Cell (row, col) of a point: floor of its offset from (lat0, lon0) in cells of dlat x dlon degrees."""

    lat0: float
    lon0: float
    dlat: float
    dlon: float
    rows: int
    cols: int
    cos_min: float  # the smallest cos(latitude) of any point in the grid, for the east-west bound
    cell_m: float

    def cell(self, lat: float, lon: float) -> tuple[int, int]:
        """The cell holding the point, clamped to the grid (a point outside still starts at the nearest)."""
        row = min(max(int((lat - self.lat0) // self.dlat), 0), self.rows - 1)
        col = min(max(int((lon - self.lon0) // self.dlon), 0), self.cols - 1)
        return row, col

    def reach(self, distance_m: float) -> int:
        """Cells on each side of a point's cell that hold everything within `distance_m` of it (about)."""
        whole = max(self.rows, self.cols)
        return whole if distance_m >= whole * self.cell_m else math.ceil(distance_m / self.cell_m) + 1

    def block(self, row: int, col: int, reach: int) -> Block:
        """The cells within `reach` of (row, col), clipped to the grid."""
        rows = (max(row - reach, 0), min(row + reach, self.rows - 1))
        return rows, (max(col - reach, 0), min(col + reach, self.cols - 1))

    def bound_m(self, lat: float, lon: float, block: Block) -> float:
        """A lower bound of the distance from the point to any grid point outside the block of cells
        (inf when the block covers the grid). North-south: the latitude gap alone; east-west: the longitude
        gap at the smallest cosine (haversine's second term, dropping the first, which is never negative)."""
        rows, cols = block
        gaps = []
        if rows[0] > 0:
            gaps.append(max(0.0, lat - (self.lat0 + rows[0] * self.dlat)) * METRES_PER_DEGREE)
        if rows[1] < self.rows - 1:
            gaps.append(max(0.0, self.lat0 + (rows[1] + 1) * self.dlat - lat) * METRES_PER_DEGREE)
        lon_gaps = []
        if cols[0] > 0:
            lon_gaps.append(max(0.0, lon - (self.lon0 + cols[0] * self.dlon)))
        if cols[1] < self.cols - 1:
            lon_gaps.append(max(0.0, self.lon0 + (cols[1] + 1) * self.dlon - lon))
        if lon_gaps:
            h = math.cos(math.radians(lat)) * self.cos_min * math.sin(math.radians(min(lon_gaps)) / 2) ** 2
            gaps.append(2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h))))
        return min(gaps, default=math.inf) * SAFETY


class NearestIndex:
    """The cameras' positions, for nearest-first queries. Immutable: build a new one when cameras change."""

    def __init__(self, points: list[CameraPoint], cell_m: float = 250.0) -> None:
        ids = [p.camera_id for p in points]
        if len(set(ids)) != len(ids):
            raise ValueError("camera ids must be unique")
        lats = np.array([p.lat for p in points], dtype=np.float64)
        lons = np.array([p.lon for p in points], dtype=np.float64)
        self._grid = _grid(lats, lons, cell_m)
        rows = ((lats - self._grid.lat0) // self._grid.dlat).astype(np.int64)
        cols = ((lons - self._grid.lon0) // self._grid.dlon).astype(np.int64)
        cells = rows * self._grid.cols + cols
        order = np.argsort(cells, kind="stable")
        self._points = [points[i] for i in order]
        self._lats, self._lons = lats[order], lons[order]
        self._lat_rad, self._lon_rad = np.radians(self._lats), np.radians(self._lons)
        self._cos_lat = np.cos(self._lat_rad)
        self._rank = np.argsort(np.argsort(np.array(ids, dtype=object)[order], kind="stable"), kind="stable")
        self._districts = sorted({p.district for p in points})
        code = {d: i for i, d in enumerate(self._districts)}
        self._codes = np.array([code[p.district] for p in self._points], dtype=np.int64)
        counts = np.bincount(cells, minlength=self._grid.rows * self._grid.cols)
        self._starts: Ints = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @classmethod
    def build(cls, points: Iterable[CameraPoint], cell_m: float = 250.0) -> Self:
        return cls(list(points), cell_m)

    def __len__(self) -> int:
        return len(self._points)

    def nearest(
        self,
        lat: float,
        lon: float,
        k: int,
        max_m: float | None = None,
        districts: Collection[str] | None = None,
    ) -> list[Neighbour]:
        """The k cameras nearest to (lat, lon), nearest first (ties by camera id); only those within `max_m`
        metres and in `districts` when given."""
        if k <= 0 or not self._points:
            return []
        return self._search(lat, lon, k, max_m, districts)

    def within(self, lat: float, lon: float, radius_m: float) -> list[Neighbour]:
        """Every camera within `radius_m` metres of (lat, lon), nearest first (ties by camera id)."""
        if not self._points:
            return []
        return self._search(lat, lon, None, radius_m, None)

    def _search(
        self, lat: float, lon: float, k: int | None, max_m: float | None, districts: Collection[str] | None
    ) -> list[Neighbour]:
        allowed = self._allowed(districts)
        limit = math.inf if max_m is None else max_m
        row, col = self._grid.cell(lat, lon)
        reach = 1 if k is not None else self._grid.reach(limit)  # cells on each side of the point's cell
        while True:
            block = self._grid.block(row, col, reach)
            found, distances = self._block(lat, lon, block, allowed)
            bound = self._grid.bound_m(lat, lon, block)
            if k is not None and np.count_nonzero(distances <= limit) >= k:
                kth = float(np.partition(distances, k - 1)[k - 1])
                if kth < bound:
                    return self._ranked(lat, lon, found, distances, upto=kth, k=k)
                reach = max(reach + 1, self._grid.reach(kth))
            elif limit < bound or bound == math.inf:
                return self._ranked(lat, lon, found, distances, upto=limit, k=k)
            else:
                reach *= 2

    def _allowed(self, districts: Collection[str] | None) -> npt.NDArray[np.bool_] | None:
        if districts is None:
            return None
        wanted = set(districts)
        return np.array([d in wanted for d in self._districts], dtype=np.bool_)

    def _block(
        self, lat: float, lon: float, block: Block, allowed: npt.NDArray[np.bool_] | None
    ) -> tuple[Ints, Floats]:
        """Positions (in the sorted arrays) and distances of the block's cameras in the allowed districts."""
        (row0, row1), (col0, col1) = block
        first = np.arange(row0, row1 + 1, dtype=np.int64) * self._grid.cols
        starts, ends = self._starts[first + col0], self._starts[first + col1 + 1]
        lengths = ends - starts
        found: Ints = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
        if allowed is not None:
            found = found[allowed[self._codes[found]]]
        distances = _haversine(
            np.radians(lat), np.radians(lon), self._lat_rad[found], self._lon_rad[found], self._cos_lat[found]
        )
        return found, distances

    def _ranked(
        self, lat: float, lon: float, found: Ints, distances: Floats, *, upto: float, k: int | None
    ) -> list[Neighbour]:
        """The block's cameras within `upto` metres, nearest first (ties by camera id), at most k."""
        keep = distances <= upto
        found, distances = found[keep], distances[keep]
        order = np.lexsort((self._rank[found], distances))[:k]
        chosen, chosen_m = found[order], distances[order]
        bearings = bearings_many(lat, lon, self._lats[chosen], self._lons[chosen])
        return [
            Neighbour(p.camera_id, p.district, p.lat, p.lon, d, b)
            for p, d, b in zip(
                [self._points[i] for i in chosen.tolist()], chosen_m.tolist(), bearings.tolist(), strict=True
            )
        ]


def _grid(lats: Floats, lons: Floats, cell_m: float) -> _Grid:
    if len(lats) == 0:
        return _Grid(0.0, 0.0, 1.0, 1.0, 1, 1, 1.0, cell_m)
    lat0, lat1, lon0, lon1 = float(lats.min()), float(lats.max()), float(lons.min()), float(lons.max())
    cos_min = min(math.cos(math.radians(lat0)), math.cos(math.radians(lat1)))
    dlat = cell_m / METRES_PER_DEGREE
    dlon = dlat / max(cos_min, 1e-6)
    rows, cols = int((lat1 - lat0) // dlat) + 1, int((lon1 - lon0) // dlon) + 1
    return _Grid(lat0, lon0, dlat, dlon, rows, cols, cos_min, cell_m)
