"""Live view of a granted camera: start a session, its HLS playlist, renew, stop, save a range as a clip.

`POST /v1/incidents/{id}/live` records the session, queues its signed LiveRequest and audits the start in one
transaction; the agent streams one-GOP fMP4 segments into the bucket and announces each (collector/live/
follower.py lists it). `GET /v1/live/{id}/index.m3u8` builds the playlist from the index on every fetch, with
presigned URLs (collector/live/playlist.py); a fetch is what keeps a session alive. A session belongs to the
account that started it: any other caller gets 404, as for a session that does not exist.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from collector.access.policy import AgencyPolicy
from collector.audit.chain import AuditSubject, append
from collector.commands.outbox import enqueue
from collector.index import incidents, queries
from collector.index import live as db
from collector.index.store import CameraView
from collector.live import playlist, sessions
from collector.platform import clips, grants
from collector.platform.errors import ERROR_RESPONSES, ApiError, not_found
from collector.platform.guard import Caller, CallerDep, ViewerDep

router = APIRouter(tags=["live"], responses=ERROR_RESPONSES)
TOUCH_EVERY_S = 5.0  # a fetch is written at most this often per session (players reload every second)


class LiveAsk(BaseModel):
    """A camera within the incident's grant; the sub stream unless asked (smaller, what a tile needs)."""

    model_config = ConfigDict(extra="forbid")

    camera_id: clips.CameraId
    stream: Literal["sub", "main"] = "sub"
    purpose: Annotated[str | None, Field(min_length=1, max_length=500, pattern=r"^[^\x00]*$")] = None


class LiveSession(BaseModel):
    session_id: str
    incident_id: str
    camera_id: str
    stream: Literal["sub", "main"]
    # starting: asked, no segment yet; live: segments listed; stopped: see stop_reason.
    state: Literal["starting", "live", "stopped"]
    playlist_url: str
    expires_at: datetime  # the session ends on its own then unless renewed
    stop_reason: str | None


class SaveAsk(BaseModel):
    """The range to keep, [start, end): it becomes an evidence clip from the camera's pre-roll."""

    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime
    end: AwareDatetime


@router.post("/incidents/{incident_id}/live", status_code=201, summary="Watch a granted camera live")
def start_live(c: CallerDep, incident_id: str, body: LiveAsk) -> LiveSession:
    with c.p.store().reading() as tx:
        row = grants.load(tx, incident_id)
        item = queries.cameras_by_id(tx, [body.camera_id]).get(body.camera_id)
    c.require("incident.read", incident=grants.view(row), purpose=row.purpose)
    if row.state(c.now)[0] == "closed":
        raise ApiError(409, "incident_closed", f"incident {incident_id} is closed; its grant ended with it")
    if item is None:
        raise ApiError(404, "camera_not_found", f"no camera {body.camera_id!r}", "camera_id")
    purpose = body.purpose or row.purpose
    subject = AuditSubject(camera_id=item.camera_id, district=item.district, start=c.now)
    _require_live(c, row, item, purpose, subject)
    if c.p.signer is None:
        raise ApiError(503, "commands_unavailable", "this collector cannot sign commands")
    session = _new_session(c, row, item, body.stream, purpose)
    command = c.p.signer.sign(sessions.command(session, "start", c.now))
    record = c.record("live.start", row.incident_id, [subject], purpose,
                      detail={"session_id": session.session_id, "stream": body.stream})  # fmt: skip
    with c.p.store().transaction() as tx:
        db.lock_agency(tx, session.agency)
        running = db.active_of(tx, session.agency)
        full = len(running) >= _agency(c).live_max_sessions
        if not full:
            db.insert_session(tx, session)
            enqueue(tx, command, c.now)
            append(tx, record)
    if full:
        _refuse_limit(c, row.incident_id, purpose, subject, running)
    c.p.notify_outbox()
    return _shown(session)


@router.get("/live/{session_id}", summary="A live session (the caller's own)")
def get_live(c: CallerDep, session_id: str) -> LiveSession:
    return _shown(_own(c, session_id))


@router.get(
    "/live/{session_id}/index.m3u8",
    summary="The session's HLS media playlist (v7, fMP4), built from the index with presigned URLs",
    response_class=Response,
    responses={200: {"content": {playlist.MIME: {}}}},
)
def get_playlist(c: ViewerDep, session_id: str) -> Response:
    row = _own(c, session_id)
    _require_live(c, *_place(c, row), row.purpose, sessions.subject(row))
    if c.p.objects is None:
        raise ApiError(503, "storage_unavailable", "this collector has no bucket to serve live segments from")
    every = min(TOUCH_EVERY_S, c.p.live.idle_stop_s / 4)
    if row.state != "stopped" and row.last_fetch_at <= c.now - every:  # a write only every few seconds
        with c.p.store().transaction() as tx:
            db.touch(tx, session_id, c.now, every)
    with c.p.store().reading() as tx:
        current = db.session(tx, session_id) or row
        segments = db.window(tx, session_id, c.p.live.playlist_segments)
    objects, expiry = c.p.objects, c.p.live.url_expiry_s
    text = playlist.build(segments, current.target_s, current.state == "stopped",
                          lambda key: objects.presign(key, expiry))  # fmt: skip
    return Response(text, media_type=playlist.MIME, headers={"Cache-Control": "no-store"})


@router.post("/live/{session_id}/renew", summary="Keep watching: the policy's live maximum from now")
def renew_live(c: CallerDep, session_id: str) -> LiveSession:
    row = _own(c, session_id)
    incident, item = _place(c, row)
    _require_live(c, incident, item, row.purpose, sessions.subject(row))
    if row.state == "stopped":
        raise ApiError(409, "session_stopped", f"live session {session_id} stopped ({row.stop_reason})")
    if c.p.signer is None:
        raise ApiError(503, "commands_unavailable", "this collector cannot sign commands")
    until = c.now + _agency(c).live_max_s
    renewed = dataclasses.replace(row, until_at=until)
    command = c.p.signer.sign(sessions.command(renewed, "renew", c.now))
    record = c.record("live.renew", row.incident_id, [sessions.subject(row)], row.purpose,
                      detail={"session_id": session_id, "until": until})  # fmt: skip
    with c.p.store().transaction() as tx:
        if not db.extend(tx, session_id, until):
            raise ApiError(409, "session_stopped", f"live session {session_id} stopped")
        enqueue(tx, command, c.now)
        append(tx, record)
    c.p.notify_outbox()
    return _shown(renewed)


@router.post("/live/{session_id}/stop", summary="Stop watching (no effect on a stopped session)")
def stop_live(c: CallerDep, session_id: str) -> LiveSession:
    row = _own(c, session_id)
    if row.state != "stopped":
        if c.p.signer is None:
            raise ApiError(503, "commands_unavailable", "this collector cannot sign commands")
        reason = sessions.STOPPED_BY_REQUEST
        record = c.record("live.stop", row.incident_id, [sessions.subject(row, c.now)], row.purpose,
                          code=reason, detail={"session_id": session_id, "reason": reason})  # fmt: skip
        with c.p.store().transaction() as tx:
            sessions.stop(tx, c.p.signer, row, reason=reason, record=record, now=c.now)
        c.p.notify_outbox()
    return _shown(_own(c, session_id))


@router.post("/live/{session_id}/save", status_code=201, summary="Keep a range as an evidence clip")
def save_live(c: CallerDep, session_id: str, body: SaveAsk) -> clips.Clip:
    row = _own(c, session_id)
    incident, item = _place(c, row)
    start, end = clips.window(c, body.start, body.end)
    subject = AuditSubject(camera_id=item.camera_id, district=item.district, start=start, end=end)
    c.require("clip.request", incident=grants.view(incident), camera=grants.place(incident, item),
              purpose=row.purpose, subjects=[subject])  # fmt: skip
    detail = {"session_id": session_id}
    return clips.submit(c, incident, [item], start, end, action="live.save", detail=detail)[0]


def _own(c: Caller, session_id: str) -> db.SessionRow:
    """The caller's own session; 404 for another account's, exactly as for one that does not exist."""
    with c.p.store().reading() as tx:
        row = db.session(tx, session_id)
    if row is None or row.account != c.principal.account or row.agency != c.principal.agency:
        raise not_found("live_session", session_id)
    return row


def _place(c: Caller, row: db.SessionRow) -> tuple[incidents.IncidentRow, CameraView]:
    with c.p.store().reading() as tx:
        incident = grants.load(tx, row.incident_id)
        item = queries.cameras_by_id(tx, [row.camera_id]).get(row.camera_id)
    if item is None:
        raise ApiError(404, "camera_not_found", f"camera {row.camera_id!r} is no longer in the index")
    return incident, item


def _require_live(
    c: Caller, incident: incidents.IncidentRow, item: CameraView, purpose: str, subject: AuditSubject
) -> None:
    """403 (audited) unless the policy lets the caller watch this camera under this incident now."""
    c.require("live", incident=grants.view(incident), camera=grants.place(incident, item), purpose=purpose,
              subjects=[subject])  # fmt: skip


def _agency(c: Caller) -> AgencyPolicy:
    agency = c.agency
    assert agency is not None  # the decision refused unknown agencies before
    return agency


def _new_session(
    c: Caller, row: incidents.IncidentRow, item: CameraView, stream: str, purpose: str
) -> db.SessionRow:
    return db.SessionRow(
        session_id=f"live-{uuid.uuid4().hex[:20]}",
        incident_id=row.incident_id,
        camera_id=item.camera_id,
        district=item.district,
        agency=c.principal.agency,
        account=c.principal.account,
        stream=stream,
        purpose=purpose,
        service=row.service,
        state="starting",
        stop_reason=None,
        created_at=c.now,
        until_at=c.now + _agency(c).live_max_s,
        last_fetch_at=c.now,
    )


def _refuse_limit(
    c: Caller, incident_id: str, purpose: str, subject: AuditSubject, running: list[db.SessionRow]
) -> None:
    """429 (audited) with Retry-After: when the soonest of the agency's sessions ends on its own."""
    idle = c.p.live.idle_stop_s
    soonest = min(min(s.until_at, s.last_fetch_at + idle) for s in running) if running else c.now + 1
    retry = max(1, math.ceil(soonest - c.now))
    limit = _agency(c).live_max_sessions
    record = c.record("live.start", incident_id, [subject], purpose, result="refused", code="live_limit",
                      detail={"limit": limit})  # fmt: skip
    with c.p.store().transaction() as tx:
        append(tx, record)
    raise ApiError(429, "live_limit", f"your agency has {limit} live sessions open; retry in {retry} s",
                   headers={"Retry-After": str(retry)})  # fmt: skip


def _shown(row: db.SessionRow) -> LiveSession:
    return LiveSession(
        session_id=row.session_id,
        incident_id=row.incident_id,
        camera_id=row.camera_id,
        stream=row.stream,
        state=row.state,
        playlist_url=f"/v1/live/{row.session_id}/index.m3u8",
        expires_at=datetime.fromtimestamp(row.until_at, UTC),
        stop_reason=row.stop_reason,
    )
