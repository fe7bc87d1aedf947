"""Response and request models shared by the routers (times are ISO 8601 UTC in JSON)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator, BaseModel

from collector.index.queries import CameraItem
from contract.districts import DISTRICTS


def known_district(slug: str) -> str:
    if slug not in DISTRICTS:
        raise ValueError(f"not one of Seoul's 25 district slugs ({', '.join(DISTRICTS)})")
    return slug


DistrictSlug = Annotated[str, AfterValidator(known_district)]
DistrictSlugQuery = Annotated[DistrictSlug | None, Query(description="district slug: gangnam")]


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class Camera(BaseModel):
    camera_id: str
    district: str
    agent_id: str
    name: str
    state: str
    reasons: list[str]
    manufacturer: str
    model: str
    lat: float | None
    lon: float | None
    last_seen: datetime | None
    agent_online: bool | None

    @classmethod
    def of(cls, c: CameraItem) -> Camera:
        return cls(
            camera_id=c.camera_id,
            district=c.district,
            agent_id=c.agent_id,
            name=c.name,
            state=c.state,
            reasons=c.reasons,
            manufacturer=c.manufacturer,
            model=c.model,
            lat=c.lat,
            lon=c.lon,
            last_seen=utc(c.last_seen),
            agent_online=c.agent_online,
        )
