"""`GET /v1/cameras`: cameras by district, state and bounding box, one keyset page at a time."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from collector.index import queries
from collector.platform.errors import ERROR_RESPONSES, ApiError
from collector.platform.guard import CallerDep
from collector.platform.routing import Route
from collector.platform.schemas import Camera, DistrictSlugQuery
from contract.messages import CameraState

router = APIRouter(tags=["cameras"], responses=ERROR_RESPONSES, route_class=Route)


class CameraPage(BaseModel):
    cameras: list[Camera]
    count: int
    next_cursor: str | None = None


@router.get("/cameras", summary="Cameras, filtered and paginated (ordered by camera id)")
def list_cameras(
    c: CallerDep,
    *,
    district: DistrictSlugQuery = None,
    state: Annotated[CameraState | None, Query()] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (WGS 84)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> CameraPage:
    c.require("cameras.list", district=district)
    flt = queries.CameraFilter(district, state, parse_bbox(bbox))
    with c.p.store().reading() as tx:
        rows = queries.camera_page(tx, flt, limit + 1, decode_cursor(cursor))
    more = len(rows) > limit
    rows = rows[:limit]
    return CameraPage(
        cameras=[Camera.of(r) for r in rows],
        count=len(rows),
        next_cursor=encode_cursor(rows[-1].camera_id) if more else None,
    )


class CameraPoints(BaseModel):
    """Every camera with a position as parallel arrays (a map of the whole city in one small response):
    camera i is `camera_ids[i]` at (`lat[i]`, `lon[i]`), in `districts[district[i]]`, `states[state[i]]`."""

    count: int
    camera_ids: list[str]
    lat: list[float]
    lon: list[float]
    district: list[int]
    state: list[int]
    districts: list[str]
    states: list[str]


@router.get("/cameras/points", summary="Every camera's position and state, as compact arrays for a map")
def camera_points(c: CallerDep, *, district: DistrictSlugQuery = None) -> CameraPoints:
    c.require("cameras.list", district=district)
    with c.p.store().reading() as tx:
        rows = queries.camera_points(tx, district)
    districts: dict[str, int] = {}
    states: dict[str, int] = {}
    return CameraPoints(
        count=len(rows),
        camera_ids=[r[0] for r in rows],
        lat=[round(r[2], 6) for r in rows],  # about 0.1 m
        lon=[round(r[3], 6) for r in rows],
        district=[districts.setdefault(r[1], len(districts)) for r in rows],
        state=[states.setdefault(r[4], len(states)) for r in rows],
        districts=list(districts),
        states=list(states),
    )


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        min_lon, min_lat, max_lon, max_lat = (float(x) for x in text.split(","))
    except ValueError:
        raise ApiError(422, "invalid_bbox", "bbox is minLon,minLat,maxLon,maxLat", "bbox") from None
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise ApiError(422, "invalid_bbox", "bbox needs min <= max within -180..180, -90..90", "bbox")
    return min_lon, min_lat, max_lon, max_lat


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "invalid_cursor", "cursor is not one this API gave", "cursor") from None
