"""What a committed batch of clip answers means for the platform's service levels: which requested windows
reached a final outcome (delivered or failed), for which agency and district, and which incident got its first
playable clip (the golden time, from the incident's opening).

The writer reads the requests' states before and after it commits a batch that holds final ClipUpdates, and
counts only the changes the index made: a QoS 1 duplicate, a late `failed` after `succeeded` (ignored by the
index) or a dead-lettered update changes nothing, so counts nothing. A `failed` window delivered after all
counts once as failed, then once as delivered. Clips without a platform request (an agent's own, or
reconciled ones) are not counted: no agency asked for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from collector.index.store import Store
from contract.messages import ClipUpdate

FINAL = frozenset({"succeeded", "failed"})
_CHUNK = 500  # ids per statement, well under every engine's limit of parameters
_STATES = """
SELECT r.request_id, r.incident_id, r.agency, r.district, i.opened_at, c.status
FROM clip_requests r JOIN incidents i ON i.incident_id = r.incident_id
LEFT JOIN clips c ON c.request_id = r.request_id
WHERE r.request_id IN ({marks})
"""
_DELIVERED = """
SELECT DISTINCT r.incident_id FROM clip_requests r JOIN clips c ON c.request_id = r.request_id
WHERE c.status = 'succeeded' AND r.incident_id IN ({marks})
"""


@dataclass(frozen=True, slots=True)
class ClipOutcome:
    agency: str
    district: str
    outcome: str  # succeeded | failed
    first_clip_s: float | None = None  # the incident's first playable clip: seconds since it was opened


@dataclass(frozen=True, slots=True)
class _Request:
    incident_id: str
    agency: str
    district: str
    opened_at: float
    status: str | None


@dataclass(frozen=True, slots=True)
class Before:
    """The requests' states, and the incidents that already had a delivered clip, before the commit."""

    requests: dict[str, _Request]
    delivered: frozenset[str]


def final_ids(messages: Iterable[object]) -> list[str]:
    """The request ids of the final clip answers among `messages`."""
    return list(
        dict.fromkeys(m.request_id for m in messages if isinstance(m, ClipUpdate) and m.status in FINAL)
    )


def before(store: Store, request_ids: list[str]) -> Before:
    requests = _states(store, request_ids)
    incidents = sorted({r.incident_id for r in requests.values()})
    rows = _query(store, _DELIVERED, incidents)
    return Before(requests, frozenset(str(r[0]) for r in rows))


def after(store: Store, was: Before, now: float) -> list[ClipOutcome]:
    """The outcomes the commit made, read back from the index."""
    if not was.requests:
        return []
    outcomes: list[ClipOutcome] = []
    first_delivered: set[str] = set()
    for request_id, now_state in _states(store, list(was.requests)).items():
        status = now_state.status
        if status not in FINAL or status == was.requests[request_id].status:
            continue
        first_clip_s = None
        incident = now_state.incident_id
        if status == "succeeded" and incident not in was.delivered and incident not in first_delivered:
            first_delivered.add(incident)
            first_clip_s = max(0.0, now - now_state.opened_at)
        outcomes.append(ClipOutcome(now_state.agency, now_state.district, status, first_clip_s))
    return outcomes


def _states(store: Store, request_ids: list[str]) -> dict[str, _Request]:
    return {
        str(r[0]): _Request(str(r[1]), str(r[2]), str(r[3]), float(r[4]), None if r[5] is None else str(r[5]))
        for r in _query(store, _STATES, request_ids)
    }


def _query(store: Store, statement: str, ids: list[str]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with store.reading() as tx:
        for at in range(0, len(ids), _CHUNK):
            part = ids[at : at + _CHUNK]
            rows += tx.query(statement.format(marks=", ".join("?" * len(part))), tuple(part))
    return rows
