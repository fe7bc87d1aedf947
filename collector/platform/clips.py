"""Clip requests under an incident, their progress, and audited playback URLs.

`POST /v1/incidents/{id}/clips` records one request per camera, queues its signed ClipRequest in the command
outbox and audits it, all in one transaction, then wakes the outbox publisher. The agent's ClipUpdates fill
the `clips` table; `GET /v1/clips/{id}` reads both and, once the clip is in the bucket, checks its manifest
and hands out presigned URLs, each one an audited access.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from collector.access.decision import decide
from collector.audit.chain import AuditSubject, append_many
from collector.commands.outbox import enqueue_many
from collector.index import incidents as db
from collector.index import queries
from collector.index.store import CameraView
from collector.platform import grants
from collector.platform.errors import ERROR_RESPONSES, ApiError, not_found
from collector.platform.guard import Caller, CallerDep
from collector.platform.routing import Route
from collector.platform.schemas import utc
from contract.messages import SERVICE_PRIORITY, ClipRequest

router = APIRouter(tags=["clips"], responses=ERROR_RESPONSES, route_class=Route)
MAX_CAMERAS = 50
CameraId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


class ClipsAsk(BaseModel):
    """Name the cameras, or ask for the `nearest` N the grant covers; the window is [start, end)."""

    model_config = ConfigDict(extra="forbid")

    camera_ids: Annotated[list[CameraId] | None, Field(min_length=1, max_length=MAX_CAMERAS)] = None
    nearest: Annotated[int | None, Field(ge=1, le=MAX_CAMERAS)] = None
    start: AwareDatetime
    end: AwareDatetime


class Playback(BaseModel):
    url: str
    thumbnail_url: str | None
    manifest_url: str | None = None  # the agent's signed manifest, to keep beside a downloaded clip
    expires_at: datetime


class Clip(BaseModel):
    clip_id: str
    incident_id: str
    camera_id: str
    district: str
    requested_by: str
    requested_at: datetime
    start: datetime
    end: datetime
    # requested: no answer from the agent yet; then its ClipUpdate status.
    state: Literal["requested", "accepted", "capturing", "uploading", "succeeded", "failed"]
    reason: str | None = None
    covered_start: datetime | None = None
    covered_end: datetime | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    source: str | None = None  # where the agent took the footage from: live, preroll, recording
    manifest_verified: bool | None = None
    manifest_problem: str | None = None
    playback: Playback | None = None
    playback_refused: str | None = None  # the decision code when the grant no longer covers playback


class ClipList(BaseModel):
    clips: list[Clip]
    count: int
    next_offset: int | None


@router.post("/incidents/{incident_id}/clips", status_code=202, summary="Request clips from the cameras")
def request_clips(c: CallerDep, incident_id: str, body: ClipsAsk) -> ClipList:
    try:
        row, cameras, start, end = _admit(c, incident_id, body)
    except ApiError as exc:
        if exc.status == 403:
            c.p.metrics.clip_requests.labels(agency=_agency_label(c), outcome="refused").inc()
        raise
    clips = submit(c, row, cameras, start, end)
    return ClipList(clips=clips, count=len(clips), next_offset=None)


def _admit(
    c: Caller, incident_id: str, body: ClipsAsk
) -> tuple[db.IncidentRow, list[CameraView], float, float]:
    """The incident, the cameras and the window of a request the policy allows (403 otherwise, audited)."""
    with c.p.store().reading() as tx:
        row = grants.load(tx, incident_id)
    incident = grants.view(row)
    # The incident first (the caller's own; `nearest` lists its cameras), then each camera against the grant.
    c.require("cameras.nearby" if body.nearest else "incident.read", incident=incident, purpose=row.purpose)
    start, end = window(c, body.start, body.end)
    cameras = _cameras(c, row, body)
    for item in cameras:
        c.require(
            "clip.request",
            incident=incident,
            camera=grants.place(row, item),
            purpose=row.purpose,
            subjects=[AuditSubject(camera_id=item.camera_id, district=item.district, start=start, end=end)],
        )
    return row, cameras, start, end


def _agency_label(c: Caller) -> str:
    """The caller's agency as a metric label: one of the policy's, so a token cannot add series."""
    return c.principal.agency if c.agency is not None else "unknown"


def submit(
    c: Caller,
    row: db.IncidentRow,
    cameras: list[CameraView],
    start: float,
    end: float,
    *,
    action: str = "clip.request",
    detail: dict[str, str] | None = None,
) -> list[Clip]:
    """Request [start, end) of each camera (the caller checked the grant): the requests, their signed commands
    and one audit record each (`action`, with `detail`) in one transaction; then wake the outbox."""
    if c.p.signer is None:
        raise ApiError(503, "commands_unavailable", "this collector cannot sign commands")
    requests = [_request(c, row, item, start, end) for item in cameras]
    commands = [c.p.signer.sign(_command(c, row, req)) for req in requests]
    window = {"start": start, "end": end}
    records = [
        c.record(
            action,
            row.incident_id,
            [AuditSubject(camera_id=req.camera_id, district=req.district, **window)],
            row.purpose,
            detail={"request_id": req.request_id, **(detail or {})},
        )
        for req in requests
    ]
    with c.p.store().transaction() as tx:  # a statement per table, not per camera
        db.insert_clip_requests(tx, requests)
        enqueue_many(tx, commands, c.now)
        append_many(tx, records)  # last: the chain's head stays locked until the commit
    c.p.notify_outbox()
    c.p.metrics.clip_requests.labels(agency=_agency_label(c), outcome="requested").inc(len(requests))
    return [_clip(_requested(r)) for r in requests]


@router.get("/clips/{clip_id}", summary="A clip's progress, manifest check and, once stored, playback URLs")
def get_clip(c: CallerDep, clip_id: str) -> Clip:
    with c.p.store().reading() as tx:
        state = db.clip_state(tx, clip_id)
        if state is None:
            raise not_found("clip", clip_id)
        row = grants.load(tx, state.request.incident_id)
        item = queries.cameras_by_id(tx, [state.request.camera_id]).get(state.request.camera_id)
    incident = grants.view(row)
    c.require("clip.read", incident=incident, purpose=row.purpose)
    clip = _clip(state)
    if state.status != "succeeded" or state.object_key is None or c.p.objects is None:
        return clip
    verdict = c.p.objects.verify(state)
    clip.manifest_verified, clip.manifest_problem = verdict.verified, verdict.problem
    place = grants.place(row, item) if item is not None else None
    decision = decide(
        c.p.access.policy, c.principal, "clip.playback", incident=incident, camera=place, now=c.now
    )
    if not decision.allowed:
        clip.playback_refused = decision.code
        with c.p.store().transaction() as tx:
            c.audit(tx, "clip.playback", row.incident_id, subjects=[_subject(state)], purpose=row.purpose,
                    result="refused", code=decision.code)  # fmt: skip
        return clip
    clip.playback = _playback(c, row, state)
    return clip


@router.get("/clips", summary="The caller's agency's clips by camera, incident and request time")
def list_clips(
    c: CallerDep,
    *,
    camera: Annotated[str | None, Query(max_length=128)] = None,
    incident: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ClipList:
    c.require("incident.read")
    flt = db.ClipFilter(
        c.principal.agency,
        camera,
        incident,
        None if since is None else since.timestamp(),
        None if until is None else until.timestamp(),
    )
    with c.p.store().reading() as tx:
        states = db.clip_states(tx, flt, limit + 1, offset)
    clips = [_clip(s) for s in states[:limit]]
    return ClipList(
        clips=clips, count=len(clips), next_offset=offset + limit if len(states) > limit else None
    )


def window(c: Caller, start_at: datetime, end_at: datetime) -> tuple[float, float]:
    """The window as epoch seconds, within the caller's agency's limits; 422 naming the field otherwise."""
    agency = c.agency
    assert agency is not None  # the decision refuses unknown agencies
    start, end = start_at.timestamp(), end_at.timestamp()
    if end <= start:
        raise ApiError(422, "invalid_window", "end must be after start", "end")
    if end - start > agency.max_window_s:
        raise ApiError(422, "window_too_long", f"a clip is at most {agency.max_window_s} s long", "end")
    if start < c.now - agency.max_past_s:
        raise ApiError(
            422, "window_too_old", f"start may lie at most {agency.max_past_s} s in the past", "start"
        )
    if end > c.now + agency.max_future_s:
        raise ApiError(422, "window_in_future", f"end may lie at most {agency.max_future_s} s ahead", "end")
    return start, end


def _cameras(c: Caller, row: db.IncidentRow, body: ClipsAsk) -> list[CameraView]:
    if (body.camera_ids is None) == (body.nearest is None):
        raise ApiError(422, "invalid_request", "give camera_ids or nearest, not both", "camera_ids")
    if body.nearest is not None:
        found = [item for _, item in grants.nearby_items(c, row, body.nearest)]
        if not found:
            raise ApiError(
                422, "no_cameras_in_grant", "no camera with a position lies within the grant", "nearest"
            )
        return found
    ids = list(dict.fromkeys(body.camera_ids or []))
    with c.p.store().reading() as tx:
        items = queries.cameras_by_id(tx, ids)
    unknown = [i for i in ids if i not in items]
    if unknown:
        raise ApiError(404, "camera_not_found", f"no camera {unknown[0]!r}", "camera_ids")
    return [items[i] for i in ids]


def _request(c: Caller, row: db.IncidentRow, item: CameraView, start: float, end: float) -> db.ClipRequestRow:
    return db.ClipRequestRow(
        request_id=f"clip-{uuid.uuid4().hex[:20]}",
        incident_id=row.incident_id,
        camera_id=item.camera_id,
        district=item.district,
        agency=c.principal.agency,
        requested_by=c.principal.account,
        service=row.service,
        priority=SERVICE_PRIORITY[row.service],  # type: ignore[index]
        start_at=start,
        end_at=end,
        requested_at=c.now,
    )


def _command(c: Caller, row: db.IncidentRow, req: db.ClipRequestRow) -> ClipRequest:
    return ClipRequest(
        district=req.district,
        request_id=req.request_id,
        camera_id=req.camera_id,
        start=datetime.fromtimestamp(req.start_at, UTC),
        end=datetime.fromtimestamp(req.end_at, UTC),
        purpose=row.purpose,
        agency=req.agency,
        incident=row.incident_id,
        priority=req.priority,
        requested_by=req.requested_by,
        sent_at=datetime.fromtimestamp(c.now, UTC),
        service=row.service,
    )


def _playback(c: Caller, row: db.IncidentRow, state: db.ClipState) -> Playback:
    """Presigned URLs for the clip and its thumbnail, each issue audited (in one transaction)."""
    assert c.p.objects is not None and state.object_key is not None
    expiry = c.p.settings.url_expiry_s
    url = c.p.objects.presign(state.object_key, expiry)
    thumb = None if state.thumbnail_key is None else c.p.objects.presign(state.thumbnail_key, expiry)
    manifest = None if state.manifest_key is None else c.p.objects.presign(state.manifest_key, expiry)
    detail = {"request_id": state.request.request_id, "expires_s": expiry}
    issued = ["clip.playback"] if thumb is None else ["clip.playback", "clip.thumbnail"]
    records = [c.record(a, row.incident_id, [_subject(state)], row.purpose, detail=detail) for a in issued]
    with c.p.store().transaction() as tx:
        append_many(tx, records)
    expires_at = datetime.fromtimestamp(c.now + expiry, UTC)
    return Playback(url=url, thumbnail_url=thumb, manifest_url=manifest, expires_at=expires_at)


def _subject(state: db.ClipState) -> AuditSubject:
    r = state.request
    return AuditSubject(camera_id=r.camera_id, district=r.district, start=r.start_at, end=r.end_at)


def _requested(req: db.ClipRequestRow) -> db.ClipState:
    return db.ClipState(req, None, None, None, None, None, None, None, None, None, None)


def _clip(s: db.ClipState) -> Clip:
    r = s.request
    return Clip(
        clip_id=r.request_id,
        incident_id=r.incident_id,
        camera_id=r.camera_id,
        district=r.district,
        requested_by=r.requested_by,
        requested_at=datetime.fromtimestamp(r.requested_at, UTC),
        start=datetime.fromtimestamp(r.start_at, UTC),
        end=datetime.fromtimestamp(r.end_at, UTC),
        state=s.status or "requested",
        reason=s.reason,
        covered_start=utc(s.covered_start),
        covered_end=utc(s.covered_end),
        size_bytes=s.size_bytes,
        sha256=s.sha256,
        source=s.footage,
    )
