"""What one LiveUpdate does to the index: a segment is listed, a stop is recorded; anything that does not
belong to a session this collector started is refused with a reason (counted by the caller, never raised).

An update is taken only from the agent that announced itself for the session's district, for the session's
own camera and district: a district agent cannot add segments to another district's session.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.index import live as db
from collector.index.tx import Tx
from contract.messages import LiveUpdate

ENDED = frozenset({"stopped", "failed", "refused"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """`refused`: the reason slug when the update was dropped; `listed`: the segment it listed, if any."""

    refused: str | None = None
    listed: db.SegmentRow | None = None
    session: db.SessionRow | None = None


def apply(tx: Tx, update: LiveUpdate, now: float) -> Outcome:
    current = db.session(tx, update.session_id, lock=True)
    if current is None:
        return Outcome("unknown_session")
    if current.district != update.district:
        return Outcome("session_of_other_district")
    if current.camera_id != update.camera_id:
        return Outcome("camera_mismatch")
    agents = tx.query("SELECT agent_id FROM agents WHERE district = ?", (update.district,))
    if not agents or agents[0][0] != update.agent_id:
        return Outcome("unknown_agent")
    if update.status in ENDED:
        db.stop(tx, current.session_id, update.reason or update.status, now)
        return Outcome(session=current)
    if update.segment is None:  # "started": the agent took the command; segments follow
        return Outcome(session=current)
    listing, listed = db.add_segment(tx, update.segment, current, now)
    if listing == "late":
        return Outcome("late_segment")
    if listing == "stopped":
        return Outcome("session_stopped")
    if listing == "duplicate":  # QoS 1 delivered it again: listed already
        return Outcome(session=current)
    return Outcome(listed=listed, session=current)
