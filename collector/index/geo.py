"""Which of Seoul's 25 districts a point lies in, from the district boundaries (data/seoul_districts.geojson).

`district_at(lat, lon)` answers with the district's slug (contract/districts.py), or None outside Seoul. The
boundaries are read once, on first use, from the package data. A point is tested against the few districts
whose bounding box holds it, then exactly: a ray crossing count over every ring of the district's polygons
(even-odd, so holes and multipolygons need no special case). A point exactly on a border may fall either side.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.districts import slug_for

BOUNDARIES = "seoul_districts.geojson"
Ring = npt.NDArray[np.float64]  # (n, 2) lon, lat; closed (first vertex repeated last)


@dataclass(frozen=True, slots=True)
class District:
    slug: str
    edges: npt.NDArray[np.float64]  # (4, n): x1, y1, x2, y2 of every edge of every ring, holes alike
    bbox: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat

    def contains(self, lat: float, lon: float) -> bool:
        min_lon, min_lat, max_lon, max_lat = self.bbox
        if not (min_lon <= lon <= max_lon and min_lat <= lat <= max_lat):
            return False
        return _crossings(self.edges, lon, lat) % 2 == 1


class DistrictMap:
    """The districts of a GeoJSON FeatureCollection whose features carry the Korean name in SIG_KOR_NM."""

    def __init__(self, districts: list[District]) -> None:
        self.districts = districts

    @classmethod
    def from_geojson(cls, document: dict[str, Any]) -> DistrictMap:
        return cls([_district(feature) for feature in document["features"]])

    def district_at(self, lat: float, lon: float) -> str | None:
        for district in self.districts:
            if district.contains(lat, lon):
                return district.slug
        return None


@functools.cache
def district_map() -> DistrictMap:
    """Seoul's districts from the package data, loaded on first use and kept."""
    text = resources.files("collector.index").joinpath("data", BOUNDARIES).read_text(encoding="utf-8")
    return DistrictMap.from_geojson(json.loads(text))


def district_at(lat: float, lon: float) -> str | None:
    """The slug of the Seoul district that holds (lat, lon), WGS84 degrees; None outside Seoul."""
    return district_map().district_at(lat, lon)


def _district(feature: dict[str, Any]) -> District:
    geometry = feature["geometry"]
    if geometry["type"] not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"unsupported geometry {geometry['type']!r}")
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    rings = [_ring(ring) for polygon in polygons for ring in polygon]
    edges = np.concatenate([np.hstack([ring[:-1], ring[1:]]) for ring in rings]).T.copy()
    corners = np.concatenate(rings)
    low, high = corners.min(axis=0), corners.max(axis=0)
    bbox = (float(low[0]), float(low[1]), float(high[0]), float(high[1]))
    return District(slug_for(feature["properties"]["SIG_KOR_NM"]), edges, bbox)


def _ring(coordinates: list[list[float]]) -> Ring:
    ring = np.asarray(coordinates, dtype=np.float64)[:, :2]
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    return ring


def _crossings(edges: npt.NDArray[np.float64], x: float, y: float) -> int:
    """How many of the edges a ray from (x, y) towards +x crosses (each edge half-open in y)."""
    spans = (edges[1] > y) != (edges[3] > y)
    x1, y1, x2, y2 = edges[:, spans]
    at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return int(np.count_nonzero(at > x))
