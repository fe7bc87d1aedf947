"""The audit trail for auditors (role actions `audit.read`, `audit.report`; such agencies never see video):
`GET /v1/audit` (records in chain order with their hashes, filtered by account, agency, incident and camera),
`GET /v1/audit/verify` (the chain checked against the signed checkpoints, as `cctv-collector audit verify`)
and `GET /v1/audit/report` (the monthly review and the districts' provision ledgers, as a ZIP of the CSV files
`cctv-collector audit report` writes). Each of them is itself recorded.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel

from collector.audit.chain import Entry, entries
from collector.audit.checkpoints import CheckpointError
from collector.audit.report import write_report
from collector.platform.errors import ERROR_RESPONSES, ApiError
from collector.platform.guard import CallerDep
from collector.platform.routing import Route

router = APIRouter(tags=["audit"], responses=ERROR_RESPONSES, route_class=Route)
Text = Annotated[str | None, Query(max_length=128)]


class AuditEntry(BaseModel):
    seq: int
    prev_hash: str
    hash: str
    record: dict[str, Any]  # what the hash covers: at, account, agency, client_ip, action, purpose, ...


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    count: int
    next_after: int | None  # pass as `after` for the next page


class ChainStatus(BaseModel):
    """`cctv-collector audit verify --json`: ok, records, first_seq, last_seq, last_hash, checkpoints,
    newest_checkpoint_seq, unanchored_records, first_bad, problems, problem_count."""

    ok: bool
    records: int
    last_seq: int
    checkpoints: int
    newest_checkpoint_seq: int | None
    unanchored_records: int
    first_bad: dict[str, Any] | None
    problem_count: int
    problems: list[dict[str, Any]]


@router.get("/audit", summary="The audit trail in chain order, filtered (auditors)")
def read_audit(
    c: CallerDep,
    *,
    after: Annotated[int, Query(ge=0, description="the last seq of the previous page")] = 0,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    account: Text = None,
    agency: Text = None,
    incident: Text = None,
    camera: Annotated[str | None, Query(max_length=128, description="a camera among the subjects")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AuditPage:
    c.require("audit.read")
    window = _window(since, until)
    wanted = {"account": account, "agency": agency, "incident": incident}
    found = entries(c.p.store(), after=after, since=window[0], until=window[1])
    chosen = list(islice(_matching(found, wanted, camera), limit + 1))
    page = chosen[:limit]
    filters = {k: v for k, v in {**wanted, "camera": camera}.items() if v is not None}
    with c.p.store().transaction() as tx:
        c.audit(tx, "audit.read", None, detail={"after": after, "count": len(page), **filters})
    return AuditPage(
        entries=[AuditEntry(seq=e.seq, prev_hash=e.prev_hash, hash=e.hash, record=e.document) for e in page],
        count=len(page),
        next_after=page[-1].seq if len(chosen) > limit else None,
    )


@router.get("/audit/verify", summary="The audit chain checked against its signed checkpoints (auditors)")
def verify_chain(c: CallerDep) -> ChainStatus:
    c.require("audit.read")
    if c.p.audit_verify is None:
        raise ApiError(503, "audit_unverifiable", "no checkpoint bucket is configured ([audit] bucket)")
    try:
        verdict = c.p.audit_verify(c.p.store())
    except (CheckpointError, OSError, ValueError) as exc:
        raise ApiError(503, "audit_unverifiable", f"the checkpoints cannot be read now: {exc}") from None
    status = ChainStatus.model_validate(verdict.as_dict())
    with c.p.store().transaction() as tx:
        c.audit(tx, "audit.verify", None, detail={"ok": status.ok, "last_seq": status.last_seq})
    return status


@router.get(
    "/audit/report",
    summary="The month's access review and provision ledgers, a ZIP of CSV files (auditors)",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def monthly_report(
    c: CallerDep,
    month: Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM, in KST")],
) -> Response:
    c.require("audit.report")
    with tempfile.TemporaryDirectory() as folder:
        written = write_report(c.p.store(), month, Path(folder))
        body = _zip(Path(folder))
    with c.p.store().transaction() as tx:
        c.audit(tx, "audit.report", None, detail={"month": month, "records": written["records"]})
    name = f"audit-report-{month}.zip"
    return Response(body, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


def _matching(found: Iterator[Entry], wanted: dict[str, str | None], camera: str | None) -> Iterator[Entry]:
    for entry in found:
        doc = entry.document
        if any(value is not None and doc.get(key) != value for key, value in wanted.items()):
            continue
        subjects = doc.get("subjects") or []
        if camera is not None and not any(s.get("camera_id") == camera for s in subjects):
            continue
        yield entry


def _zip(folder: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return out.getvalue()


def _window(since: datetime | None, until: datetime | None) -> tuple[float | None, float | None]:
    if since is None and until is None:
        return None, None
    return (0.0 if since is None else since.timestamp()), (
        float("inf") if until is None else until.timestamp()
    )
