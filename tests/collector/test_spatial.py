"""Distances and the nearest cameras (collector/index/spatial.py), checked against a brute-force scan."""

from __future__ import annotations

import csv
import math
import random

import numpy as np
import pytest

from camsim.ledger import BUNDLED_POSITIONS
from collector.index.spatial import (
    EARTH_RADIUS_M,
    CameraPoint,
    NearestIndex,
    Neighbour,
    bearing_deg,
    haversine_m,
    haversine_many,
)
from contract.districts import DISTRICTS, slug_for

SEOUL = (37.40, 37.72, 126.76, 127.19)  # south, north, west, east: every camera lies inside


def test_haversine_measures_metres_on_the_sphere() -> None:
    assert haversine_m(37.5, 127.0, 38.5, 127.0) == pytest.approx(EARTH_RADIUS_M * math.pi / 180)
    assert haversine_m(0, 0, 0, 1) == pytest.approx(EARTH_RADIUS_M * math.pi / 180)
    # Seoul City Hall to Gangnam station, against the great-circle formula PostGIS uses on its sphere.
    assert haversine_m(37.5663, 126.9779, 37.4979, 127.0276) == pytest.approx(
        _great_circle(37.5663, 126.9779, 37.4979, 127.0276), rel=1e-9
    )
    assert haversine_m(37.5, 127.0, 37.5, 127.0) == 0.0
    lats, lons = np.array([37.4979, 37.6543]), np.array([127.0276, 127.0568])
    assert list(haversine_many(37.5663, 126.9779, lats, lons)) == [
        haversine_m(37.5663, 126.9779, la, lo) for la, lo in zip(lats, lons, strict=True)
    ]


def _great_circle(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    y = math.hypot(
        math.cos(p2) * math.sin(dl), math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    )
    x = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return EARTH_RADIUS_M * math.atan2(y, x)


def test_bearing_is_clockwise_from_north() -> None:
    assert bearing_deg(37.5, 127.0, 37.6, 127.0) == pytest.approx(0.0)
    assert bearing_deg(37.5, 127.0, 37.5, 127.1) == pytest.approx(90.0, abs=0.1)
    assert bearing_deg(37.5, 127.0, 37.4, 127.0) == pytest.approx(180.0)
    assert bearing_deg(37.5, 127.0, 37.5, 126.9) == pytest.approx(270.0, abs=0.1)


@pytest.fixture(scope="module")
def cameras() -> list[CameraPoint]:
    """The 45,317 real cameras, several on a pole at the same place (ties), ids in no particular order."""
    places = []
    with BUNDLED_POSITIONS.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            place = (slug_for(row["district"]), float(row["lat"]), float(row["lon"]))
            places += [place] * int(row["count"])
    numbers = random.Random(11).sample(range(10 * len(places)), len(places))
    return [
        CameraPoint(f"cam-{n:06d}", d, lat, lon) for n, (d, lat, lon) in zip(numbers, places, strict=True)
    ]


class BruteForce:
    """Every camera's distance, sorted by (distance, camera id)."""

    def __init__(self, points: list[CameraPoint]) -> None:
        self.points = points
        self.lats = np.array([p.lat for p in points])
        self.lons = np.array([p.lon for p in points])
        self.slugs = sorted({p.district for p in points})
        self.codes = np.array([self.slugs.index(p.district) for p in points])
        self.rank = np.argsort(np.argsort(np.array([p.camera_id for p in points])))

    def nearest(self, lat: float, lon: float, k: int, max_m: float | None, districts: list[str] | None):
        d = haversine_many(lat, lon, self.lats, self.lons)
        keep = np.ones(len(d), dtype=bool)
        if max_m is not None:
            keep &= d <= max_m
        if districts is not None:
            keep &= np.isin(self.codes, [self.slugs.index(s) for s in districts])
        candidates = np.nonzero(keep)[0]
        if len(candidates) > k:  # only to sort fewer: every camera as close as the k-th stays a candidate
            kth = np.partition(d[candidates], k - 1)[k - 1]
            candidates = candidates[d[candidates] <= kth]
        order = candidates[np.lexsort((self.rank[candidates], d[candidates]))][:k]
        return [(self.points[i].camera_id, float(d[i])) for i in order]


def _queries(rng: random.Random, points: list[CameraPoint], n: int) -> list[tuple[float, float]]:
    """Near real cameras (dense), anywhere around Seoul, and along and beyond the edges of the data."""
    south, north, west, east = SEOUL
    out = []
    for i in range(n):
        match i % 3:
            case 0:
                p = rng.choice(points)
                out.append((p.lat + rng.uniform(-0.003, 0.003), p.lon + rng.uniform(-0.003, 0.003)))
            case 1:
                out.append((rng.uniform(south - 0.05, north + 0.05), rng.uniform(west - 0.05, east + 0.05)))
            case _:
                lat = rng.choice([south, north]) + rng.uniform(-0.02, 0.02)
                out.append((lat, rng.uniform(west - 0.02, east + 0.02)))
    return out


def _got(found: list[Neighbour]) -> list[tuple[str, float]]:
    return [(n.camera_id, n.distance_m) for n in found]


def test_nearest_is_exactly_a_brute_force_scan(cameras: list[CameraPoint]) -> None:
    index, brute, rng = NearestIndex.build(cameras), BruteForce(cameras), random.Random(7)
    assert len(index) == 45_317
    slugs = sorted(DISTRICTS)
    for lat, lon in _queries(rng, cameras, 2_400):
        k = rng.choice([1, 5, 20, 100])
        max_m = rng.choice([None, None, 30.0, 300.0, 2_000.0])
        districts = rng.choice([None, None, rng.sample(slugs, rng.randint(1, 3))])
        got = index.nearest(lat, lon, k, max_m=max_m, districts=districts)
        assert _got(got) == brute.nearest(lat, lon, k, max_m, districts), (lat, lon, k, max_m, districts)


def test_within_is_every_camera_inside_the_radius(cameras: list[CameraPoint]) -> None:
    index, brute, rng = NearestIndex.build(cameras), BruteForce(cameras), random.Random(8)
    for lat, lon in _queries(rng, cameras, 300):
        radius = rng.choice([0.0, 25.0, 250.0, 1_200.0])
        assert _got(index.within(lat, lon, radius)) == brute.nearest(lat, lon, len(cameras), radius, None)


def test_neighbours_carry_place_distance_and_bearing(cameras: list[CameraPoint]) -> None:
    index = NearestIndex.build(cameras)
    found = index.nearest(37.5663, 126.9779, 20)  # Seoul City Hall
    assert len(found) == 20
    assert [n.distance_m for n in found] == sorted(n.distance_m for n in found)
    by_id = {p.camera_id: p for p in cameras}
    for n in found:
        p = by_id[n.camera_id]
        assert (n.district, n.lat, n.lon) == (p.district, p.lat, p.lon)
        assert n.distance_m == pytest.approx(haversine_m(37.5663, 126.9779, p.lat, p.lon))
        assert n.bearing_deg == pytest.approx(bearing_deg(37.5663, 126.9779, p.lat, p.lon))
    assert {n.district for n in found} <= {"jung", "jongno"}


def test_small_and_empty_indexes() -> None:
    assert NearestIndex.build([]).nearest(37.5, 127.0, 5) == []
    assert NearestIndex.build([]).within(37.5, 127.0, 1_000) == []
    one = NearestIndex.build([CameraPoint("a", "jung", 37.5663, 126.9779)])
    assert [n.camera_id for n in one.nearest(35.18, 129.08, 3)] == ["a"]  # from Busan: still the nearest
    assert one.nearest(37.5, 127.0, 0) == []
    assert one.nearest(37.5663, 126.9779, 1, districts=["mapo"]) == []
    with pytest.raises(ValueError, match="unique"):
        NearestIndex.build([CameraPoint("a", "jung", 37.5, 127.0), CameraPoint("a", "mapo", 37.6, 126.9)])
