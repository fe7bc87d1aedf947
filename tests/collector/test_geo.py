"""Which district a point lies in, from Seoul's district boundaries (collector/index/geo.py)."""

from __future__ import annotations

import csv
from typing import Any

import pytest

from camsim.ledger import BUNDLED_POSITIONS
from collector.index.geo import DistrictMap, district_at, district_map
from contract.districts import DISTRICTS, slug_for


@pytest.mark.parametrize(
    ("lat", "lon", "district"),
    [
        (37.5663, 126.9779, "jung"),  # Seoul City Hall
        (37.5796, 126.9770, "jongno"),  # Gyeongbokgung
        (37.5126, 127.1025, "songpa"),  # Lotte World Tower
        (37.5587, 126.7945, "gangseo"),  # Gimpo airport
        (37.5219, 126.9245, "yeongdeungpo"),  # Yeouido
        (37.6543, 127.0568, "nowon"),  # Nowon station
    ],
)
def test_places_in_seoul_are_in_their_district(lat: float, lon: float, district: str) -> None:
    assert district_at(lat, lon) == district


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (37.4563, 126.7052),  # Incheon city hall
        (37.7381, 127.0338),  # Uijeongbu station, just north of Dobong
        (37.4292, 126.9876),  # Gwacheon, just south of Seocho
        (35.1796, 129.0756),  # Busan
        (0.0, 0.0),
    ],
)
def test_places_outside_seoul_have_no_district(lat: float, lon: float) -> None:
    assert district_at(lat, lon) is None


def test_the_han_river_belongs_to_the_districts_on_its_banks() -> None:
    # On Banpo bridge, over the water: the border runs mid-stream between Seocho (south) and Yongsan (north).
    assert district_at(37.5120, 126.9960) == "seocho"
    assert district_at(37.5200, 126.9960) == "yongsan"


def test_the_boundaries_name_all_25_districts() -> None:
    assert sorted(d.slug for d in district_map().districts) == sorted(DISTRICTS)


def test_real_camera_locations_fall_in_their_own_district() -> None:
    # camsim/data/README.md: 21,380 of the 21,409 locations lie in their own district's polygon (27 just
    # across a border, 2 in none).
    found: dict[str, int] = {"own": 0, "other": 0, "none": 0}
    with BUNDLED_POSITIONS.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            slug = district_at(float(row["lat"]), float(row["lon"]))
            kind = "none" if slug is None else "own" if slug == slug_for(row["district"]) else "other"
            found[kind] += 1
    assert found == {"own": 21_380, "other": 27, "none": 2}


def _feature(korean: str, geometry: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"SIG_KOR_NM": korean}, "geometry": geometry}


def _square(x0: float, y0: float, size: float) -> list[list[float]]:
    return [[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size], [x0, y0]]


def test_holes_and_multipolygons() -> None:
    ring_with_hole = {"type": "Polygon", "coordinates": [_square(0, 0, 10), _square(4, 4, 2)]}
    two_islands = {"type": "MultiPolygon", "coordinates": [[_square(20, 0, 1)], [_square(30, 0, 1)]]}
    districts = DistrictMap.from_geojson(
        {
            "type": "FeatureCollection",
            "features": [_feature("중구", ring_with_hole), _feature("마포구", two_islands)],
        }
    )
    assert districts.district_at(lat=1, lon=1) == "jung"
    assert districts.district_at(lat=5, lon=5) is None  # in the hole
    assert districts.district_at(lat=0.5, lon=20.5) == "mapo"
    assert districts.district_at(lat=0.5, lon=30.5) == "mapo"
    assert districts.district_at(lat=0.5, lon=25) is None  # between the islands


def test_a_boundary_file_of_an_unknown_district_is_refused() -> None:
    polygon = {"type": "Polygon", "coordinates": [_square(0, 0, 1)]}
    with pytest.raises(KeyError):
        DistrictMap.from_geojson({"features": [_feature("해운대구", polygon)]})
