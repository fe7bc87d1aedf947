"""Response and request models shared by the routers (times are ISO 8601 UTC in JSON)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from collector.index.store import CameraView
from contract.districts import DISTRICTS
from contract.messages import Service


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
    place_district: str | None  # where its position lies by Seoul's boundaries (None: no position)
    last_seen: datetime | None
    agent_online: bool | None

    @classmethod
    def of(cls, c: CameraView) -> Camera:
        return cls.model_validate({**asdict(c), "last_seen": utc(c.last_seen)})


_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


class IncidentOpen(BaseModel):
    """`POST /v1/incidents`. `radius_m` is capped by the agency's policy for the service."""

    model_config = ConfigDict(extra="forbid")

    incident_no: Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_CONTROL)]
    service: Service
    type: Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_CONTROL)]
    lat: Latitude
    lon: Longitude
    occurred_at: AwareDatetime
    radius_m: Annotated[float, Field(gt=0, le=100_000)]
    purpose: Annotated[str, Field(min_length=1, max_length=500, pattern=_NO_CONTROL)]
    arm_nearest: Annotated[
        int | None, Field(ge=1, le=50, description="arm the N nearest cameras' pre-roll")
    ] = None


class PositionAdd(BaseModel):
    """`POST /v1/incidents/{id}/positions`: a sighting of the subject."""

    model_config = ConfigDict(extra="forbid")

    lat: Latitude
    lon: Longitude
    at: AwareDatetime | None = None


class PositionOut(BaseModel):
    lat: float
    lon: float
    at: datetime
    district: str


class Grant(BaseModel):
    """What the incident's agency may see now: cameras within `radius_m` of any position (scope `incident`)
    or every camera of its districts (scope `own_district`), until `expires_at` or the incident's close."""

    scope: str
    radius_m: float
    positions: list[PositionOut]
    expires_at: datetime


class Incident(BaseModel):
    incident_id: str
    incident_no: str
    agency: str
    service: Service
    type: str
    purpose: str
    district: str | None
    occurred_at: datetime
    opened_at: datetime
    opened_by: str
    state: Literal["open", "closed"]
    close_reason: Literal["closed", "expired"] | None
    closed_at: datetime | None
    grant: Grant | None  # None in listings


class NearbyCamera(BaseModel):
    camera_id: str
    name: str
    district: str
    distance_m: float
    bearing_deg: float  # from the nearest incident position, 0 = north, clockwise
    lat: float | None
    lon: float | None
    state: str
    last_seen: datetime | None
    agent_online: bool | None


class OpenedIncident(BaseModel):
    incident: Incident
    cameras: list[NearbyCamera]
    armed: list[str]  # cameras asked to keep their pre-roll


class NearbyList(BaseModel):
    incident_id: str
    radius_m: float
    cameras: list[NearbyCamera]


class IncidentList(BaseModel):
    incidents: list[Incident]
    count: int
    next_offset: int | None
