"""`GET /v1/districts`: the 25 districts, each with its agent's presence and its cameras by state."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from collector.index import queries
from collector.platform.errors import ERROR_RESPONSES
from collector.platform.guard import CallerDep
from collector.platform.routing import Route
from collector.platform.schemas import utc
from contract.districts import DISTRICTS

router = APIRouter(tags=["districts"], responses=ERROR_RESPONSES, route_class=Route)


class District(BaseModel):
    district: str
    name: str
    agent_id: str | None
    agent_online: bool | None  # None: no agent has announced itself
    agent_seen_at: datetime | None
    cameras: int
    by_state: dict[str, int]
    availability: float | None  # share online or degraded; None without cameras


class DistrictList(BaseModel):
    districts: list[District]


@router.get("/districts", summary="Every district: agent presence and camera availability")
def list_districts(c: CallerDep) -> DistrictList:
    c.require("districts.list")
    with c.p.store().reading() as tx:
        rows = queries.districts(tx, DISTRICTS)
    return DistrictList(
        districts=[
            District(
                district=r.district,
                name=DISTRICTS[r.district],
                agent_id=r.agent_id,
                agent_online=None if r.agent_state is None else r.agent_state == "online",
                agent_seen_at=utc(r.agent_seen_at),
                cameras=r.cameras,
                by_state=r.by_state,
                availability=r.availability,
            )
            for r in rows
        ]
    )
