"""A live session's commands and its end: the signed LiveRequest each change sends to the district agent, and
stopping (the index row, the stop command and the audit record in the caller's transaction), whoever stops it:
the operator, or the reaper when nobody watches, the time is up, the incident closed or the grant ended."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from collector.audit.chain import AuditRecord, AuditSubject, append
from collector.commands.outbox import enqueue
from collector.index import live as db
from collector.index.tx import Tx
from contract.messages import SERVICE_PRIORITY, LiveAction, LiveRequest

if TYPE_CHECKING:
    from collector.commands.signing import CommandSigner

# Why the collector stopped a session (the agent's own reasons arrive in its LiveUpdates).
STOPPED_BY_REQUEST = "stopped_by_request"
IDLE = "idle"  # no playlist fetch for `live.idle_stop_s`
EXPIRED = "expired"  # `until` passed without a renewal
INCIDENT_CLOSED = "incident_closed"
GRANT_ENDED = "grant_ended"  # the camera is no longer within the incident's grant
SYSTEM_ACCOUNT = "collector"  # who the audit trail names when the collector itself stops a session


def command(row: db.SessionRow, action: LiveAction, now: float) -> LiveRequest:
    """The unsigned command for `row` as it is now (its `until` included)."""
    return LiveRequest(
        district=row.district,
        session_id=row.session_id,
        action=action,
        camera_id=row.camera_id,
        stream=row.stream,
        until=datetime.fromtimestamp(row.until_at, UTC),
        purpose=row.purpose,
        agency=row.agency,
        incident=row.incident_id,
        priority=SERVICE_PRIORITY[row.service],  # type: ignore[index]  # stored from a validated Service
        requested_by=row.account,
        sent_at=datetime.fromtimestamp(now, UTC),
        service=row.service,
    )


def subject(row: db.SessionRow, end: float | None = None) -> AuditSubject:
    return AuditSubject(camera_id=row.camera_id, district=row.district, start=row.created_at, end=end)


def stop(
    tx: Tx, signer: CommandSigner, row: db.SessionRow, *, reason: str, record: AuditRecord, now: float
) -> bool:
    """Stop `row` unless it stopped already: the index, the signed stop command and `record`, all in `tx`
    (the caller notifies the outbox after the commit). Whether this call stopped it."""
    if not db.stop(tx, row.session_id, reason, now):
        return False
    enqueue(tx, signer.sign(command(row, "stop", now)), now)
    append(tx, record)
    return True


def system_stop_record(row: db.SessionRow, reason: str, now: float) -> AuditRecord:
    """The audit record of a stop the collector decided (nobody watching, time up, grant ended)."""
    return AuditRecord(
        at=now,
        account=SYSTEM_ACCOUNT,
        agency=row.agency,
        action="live.stop",
        purpose=row.purpose,
        incident=row.incident_id,
        subjects=(subject(row, now),),
        result="allowed",
        code=reason,
        detail={"session_id": row.session_id, "reason": reason, "requested_by": row.account},
    )
