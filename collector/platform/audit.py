"""`GET /v1/audit`: the audit trail for auditors (role action `audit.read`; such agencies never see video).

Records come in chain order with their hashes, so an auditor can follow the chain; `cctv-collector audit
verify` is the full check against the signed checkpoints. Reading the trail is itself recorded.
"""

from __future__ import annotations

from datetime import datetime
from itertools import islice
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel

from collector.audit.chain import entries
from collector.platform.errors import ERROR_RESPONSES
from collector.platform.guard import CallerDep
from collector.platform.routing import Route

router = APIRouter(tags=["audit"], responses=ERROR_RESPONSES, route_class=Route)


class AuditEntry(BaseModel):
    seq: int
    prev_hash: str
    hash: str
    record: dict[str, Any]  # what the hash covers: at, account, agency, client_ip, action, purpose, ...


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    count: int
    next_after: int | None  # pass as `after` for the next page


@router.get("/audit", summary="The audit trail in chain order (auditors)")
def read_audit(
    c: CallerDep,
    *,
    after: Annotated[int, Query(ge=0, description="the last seq of the previous page")] = 0,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AuditPage:
    c.require("audit.read")
    window = _window(since, until)
    found = list(islice(entries(c.p.store(), after=after, since=window[0], until=window[1]), limit + 1))
    page = found[:limit]
    with c.p.store().transaction() as tx:
        c.audit(tx, "audit.read", None, detail={"after": after, "count": len(page)})
    return AuditPage(
        entries=[AuditEntry(seq=e.seq, prev_hash=e.prev_hash, hash=e.hash, record=e.document) for e in page],
        count=len(page),
        next_after=page[-1].seq if len(found) > limit else None,
    )


def _window(since: datetime | None, until: datetime | None) -> tuple[float | None, float | None]:
    if since is None and until is None:
        return None, None
    return (0.0 if since is None else since.timestamp()), (
        float("inf") if until is None else until.timestamp()
    )
