"""Incidents: open one (with its grant and the cameras near it), add sightings, close it, read them.

Every change is a grant change, audited in its own transaction with the change; every listing of cameras
near an incident is audited too (the cameras are the data subjects' places).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from collector.audit.chain import AuditRecord, append_many
from collector.commands.outbox import enqueue_many
from collector.index import incidents as db
from collector.index.store import StoreRejectedError
from collector.index.tx import Tx
from collector.platform import grants
from collector.platform.errors import ERROR_RESPONSES, ApiError
from collector.platform.guard import Caller, CallerDep
from collector.platform.routing import Route
from collector.platform.schemas import (
    Incident,
    IncidentList,
    IncidentOpen,
    NearbyCamera,
    NearbyList,
    OpenedIncident,
    PositionAdd,
)
from contract.messages import SERVICE_PRIORITY, ArmRequest

router = APIRouter(prefix="/incidents", tags=["incidents"], responses=ERROR_RESPONSES, route_class=Route)
MAX_POSITIONS = 200
MAX_ARM_S = 3600.0


@router.post("", status_code=201, summary="Open an incident: its grant and the cameras near it")
def open_incident(c: CallerDep, body: IncidentOpen) -> OpenedIncident:
    district = grants.district_of(body.lat, body.lon)
    c.require("incident.open", service=body.service, district=district, purpose=body.purpose)
    agency = c.agency
    assert agency is not None  # the decision refuses unknown agencies
    if body.occurred_at.timestamp() > c.now + 60:
        raise ApiError(422, "occurred_in_future", "occurred_at lies in the future", "occurred_at")
    row = db.IncidentRow(
        incident_id=f"inc-{uuid.uuid4().hex[:20]}",
        agency=c.principal.agency,
        incident_no=body.incident_no,
        service=body.service,
        kind=body.type,
        purpose=body.purpose,
        district=district,
        radius_m=min(body.radius_m, agency.max_radius_m[body.service]),
        occurred_at=body.occurred_at.timestamp(),
        opened_at=c.now,
        opened_by=c.principal.account,
        expires_at=c.now + agency.incident_max_hours[body.service] * 3600,
        positions=(db.Position(body.lat, body.lon, c.now, district, c.principal.account),),
    )
    cameras = grants.nearby(c, row, c.p.settings.nearby_default)
    armed = cameras[: body.arm_nearest or 0]
    try:
        with c.p.store().transaction() as tx:
            if db.incident_by_number(tx, row.agency, row.incident_no) is not None:
                raise ApiError(409, "incident_exists", f"incident number {row.incident_no!r} is open already")
            db.insert_incident(tx, row)
            records = [
                c.record("incident.open", row.incident_id, purpose=row.purpose, detail=_grant_detail(c, row)),
                c.record("cameras.nearby", row.incident_id, grants.subjects(cameras), row.purpose),
                *_arm(c, tx, row, armed),
            ]
            append_many(tx, records)  # last: the chain's head stays locked until the commit
    except StoreRejectedError as exc:  # two requests with one number at once: the unique key decides
        raise ApiError(409, "incident_exists", f"incident number {row.incident_no!r} exists") from exc
    if armed:
        c.p.notify_outbox()
    return OpenedIncident(
        incident=grants.shown(c, row), cameras=cameras, armed=[cam.camera_id for cam in armed]
    )


@router.get("", summary="The caller's agency's incidents, open and closed, newest first")
def list_incidents(
    c: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> IncidentList:
    c.require("incident.read")
    with c.p.store().reading() as tx:
        rows = db.agency_incidents(tx, c.principal.agency, limit + 1, offset)
    more = len(rows) > limit
    shown = [grants.shown(c, r, with_grant=False) for r in rows[:limit]]
    return IncidentList(incidents=shown, count=len(shown), next_offset=offset + limit if more else None)


@router.get("/{incident_id}", summary="One incident with its grant")
def get_incident(c: CallerDep, incident_id: str) -> Incident:
    with c.p.store().reading() as tx:
        row = grants.load(tx, incident_id)
    c.require("incident.read", incident=grants.view(row))
    return grants.shown(c, row)


@router.get("/{incident_id}/cameras", summary="The cameras the incident's grant covers, nearest first")
def incident_cameras(
    c: CallerDep, incident_id: str, limit: Annotated[int | None, Query(ge=1)] = None
) -> NearbyList:
    with c.p.store().reading() as tx:
        row = grants.load(tx, incident_id)
    c.require("cameras.nearby", incident=grants.view(row), purpose=row.purpose)
    cameras = grants.nearby(c, row, min(limit or c.p.settings.nearby_default, c.p.settings.nearby_max))
    with c.p.store().transaction() as tx:
        c.audit(tx, "cameras.nearby", row.incident_id, subjects=grants.subjects(cameras), purpose=row.purpose)
    radius = c.p.access.grant_radius_m(grants.view(row), c.now)
    return NearbyList(incident_id=row.incident_id, radius_m=radius, cameras=cameras)


@router.post("/{incident_id}/positions", status_code=201, summary="Add a sighting; the grant widens")
def add_position(c: CallerDep, incident_id: str, body: PositionAdd) -> Incident:
    district = grants.district_of(body.lat, body.lon)
    at = c.now if body.at is None else body.at.timestamp()
    if at > c.now + 60:
        raise ApiError(422, "position_in_future", "at lies in the future", "at")
    with c.p.store().reading() as tx:
        row = grants.load(tx, incident_id)
    c.require("incident.update", incident=grants.view(row), district=district, purpose=row.purpose)
    if len(row.positions) >= MAX_POSITIONS:
        raise ApiError(
            422, "too_many_positions", f"an incident holds at most {MAX_POSITIONS} positions", "lat"
        )
    with c.p.store().transaction() as tx:
        db.add_position(tx, incident_id, db.Position(body.lat, body.lon, at, district, c.principal.account))
        row = grants.load(tx, incident_id)
        c.audit(tx, "incident.update", incident_id, purpose=row.purpose, detail=_grant_detail(c, row))
    return grants.shown(c, row)


@router.post("/{incident_id}/close", summary="Close the incident; its grant ends with it")
def close_incident(c: CallerDep, incident_id: str) -> Incident:
    with c.p.store().reading() as tx:
        row = grants.load(tx, incident_id)
    c.require("incident.close", incident=grants.view(row), purpose=row.purpose)
    with c.p.store().transaction() as tx:
        if not db.close_incident(tx, incident_id, c.now, c.principal.account):
            raise ApiError(409, "incident_closed", f"incident {incident_id} is closed already")
        row = grants.load(tx, incident_id)
        c.audit(tx, "incident.close", incident_id, purpose=row.purpose, detail=_grant_detail(c, row))
    return grants.shown(c, row)


def _grant_detail(c: Caller, row: db.IncidentRow) -> dict[str, object]:
    """The grant as the audit trail records each change of it."""
    return {
        "service": row.service,
        "radius_m": c.p.access.grant_radius_m(grants.view(row), c.now),
        "positions": [[p.lat, p.lon, p.at] for p in row.positions],
        "expires_at": row.expires_at,
        "closed_at": row.closed_at,
    }


def _arm(c: Caller, tx: Tx, row: db.IncidentRow, cameras: list[NearbyCamera]) -> list[AuditRecord]:
    """Ask each camera's agent to keep its pre-roll while the incident lasts (signed, through the outbox);
    returns its audit record, for the caller to append last."""
    if not cameras:
        return []
    if c.p.signer is None:
        raise ApiError(503, "commands_unavailable", "this collector cannot sign commands")
    duration = min(row.expires_at - c.now, MAX_ARM_S)
    commands = [
        c.p.signer.sign(
            ArmRequest(
                district=cam.district,
                request_id=f"arm-{uuid.uuid4().hex[:20]}",
                camera_id=cam.camera_id,
                duration_s=duration,
                priority=SERVICE_PRIORITY[row.service],  # type: ignore[index]
                agency=row.agency,
                incident=row.incident_id,
                service=row.service,
                sent_at=datetime.fromtimestamp(c.now, UTC),
            )
        )
        for cam in cameras
    ]
    enqueue_many(tx, commands, c.now)
    return [c.record("cameras.arm", row.incident_id, grants.subjects(cameras), row.purpose)]
