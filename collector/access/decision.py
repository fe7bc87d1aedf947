"""The one decision: may this principal do this action, on this incident and camera, now?

Pure: no I/O and no clock (`now` is passed), so it is tested as a table (tests/unit/test_access_decision.py).
The caller computes a camera's distance to the incident (spatial.haversine_m to the nearest position).
Codes are stable: the API returns them and the audit trail records them (docs/access.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from collector.access.policy import ACTIONS, VIDEO_ACTIONS, Action, AgencyPolicy, Policy
from collector.access.tokens import Principal
from contract.messages import Service

__all__ = [
    "Action",
    "CameraPlace",
    "Decision",
    "IncidentView",
    "allowed_actions",
    "decide",
    "grant_radius_m",
    "in_grant",
]

# Actions on one incident that end with it; reading an incident or a clip's state stays allowed after.
_LIVE_INCIDENT_ACTIONS: frozenset[Action] = frozenset(
    {"incident.update", "incident.close", "cameras.nearby", "clip.request", "clip.playback", "live"}
)
_ON_INCIDENT: frozenset[Action] = _LIVE_INCIDENT_ACTIONS | {"incident.read", "clip.read"}
_NEEDS_CAMERA: frozenset[Action] = frozenset({"clip.request", "clip.playback", "live"})
# Listings filtered by district: an agency limited to some districts must name one of them.
_DISTRICT_LISTINGS: frozenset[Action] = frozenset({"cameras.list"})


@dataclass(frozen=True)
class IncidentView:
    incident_id: str
    agency: str
    service: Service
    district: str | None
    state: Literal["open", "closed"]
    opened_at: float
    expires_at: float
    radius_m: float
    positions: tuple[tuple[float, float, float], ...]  # (lat, lon, at)


@dataclass(frozen=True)
class CameraPlace:
    camera_id: str
    district: str
    distance_m: float | None  # to the incident's nearest position; None when the camera has no position


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str
    reason: str


OK = Decision(True, "ok", "allowed")


def _no(code: str, reason: str) -> Decision:
    return Decision(False, code, reason)


def decide(
    policy: Policy,
    principal: Principal,
    action: Action,
    *,
    incident: IncidentView | None = None,
    camera: CameraPlace | None = None,
    service: Service | None = None,
    district: str | None = None,
    now: float,
) -> Decision:
    """`service` and `district` describe what is being opened or added (incident.open, incident.update: the
    district of the new position) or the district a listing is filtered to (cameras.list)."""
    agency = policy.agencies.get(principal.agency)
    if agency is None:
        return _no("unknown_agency", f"agency {principal.agency!r} is not in the policy")
    refused = _role_problem(policy, agency, principal, action)
    if refused is not None:
        return refused
    if action == "incident.open":
        return _opening(agency, service, district)
    if action in _DISTRICT_LISTINGS and not agency.covers(district):
        return _no("district_not_granted", f"list cameras of your districts only, not {district!r}")
    if action not in _ON_INCIDENT:
        return OK
    if incident is None:  # without one, incident.read is the listing of the agency's own incidents
        return OK if action == "incident.read" else _no("incident_required", f"{action} needs an incident")
    refused = _incident_problem(agency, principal, action, incident, now)
    if refused is None and action == "incident.update" and not agency.covers(district):
        refused = _no("district_not_granted", f"position in district {district!r} outside your districts")
    if refused is None and action in _NEEDS_CAMERA:
        refused = _camera_problem(agency, incident, camera, now)
    return refused or OK


def allowed_actions(policy: Policy, principal: Principal) -> list[Action]:
    """The actions the principal's agency and role allow at all (before any incident, camera or district
    is judged), sorted: what a client such as the console offers. `decide` still judges each request."""
    agency = policy.agencies.get(principal.agency)
    if agency is None:
        return []
    return sorted(a for a in ACTIONS if _role_problem(policy, agency, principal, a) is None)


def _role_problem(
    policy: Policy, agency: AgencyPolicy, principal: Principal, action: Action
) -> Decision | None:
    role = policy.roles.get(principal.role)
    if principal.role not in agency.roles or role is None:
        return _no("role_forbidden", f"role {principal.role!r} is not granted to agency {principal.agency!r}")
    if action in VIDEO_ACTIONS and not agency.video:
        return _no("no_video", f"agency {principal.agency!r} has no access to incidents or footage")
    if action not in role.actions:
        return _no("role_forbidden", f"role {principal.role!r} may not {action}")
    return None


def _opening(agency: AgencyPolicy, service: Service | None, district: str | None) -> Decision:
    if service is None or service not in agency.services:
        return _no("service_not_granted", f"service {service!r} is not granted to this agency")
    if not agency.covers(district):
        return _no("district_not_granted", f"district {district!r} is outside this agency's districts")
    return OK


def _incident_problem(
    agency: AgencyPolicy, principal: Principal, action: Action, incident: IncidentView, now: float
) -> Decision | None:
    if incident.agency != principal.agency:
        return _no("not_own_incident", f"incident {incident.incident_id} belongs to another agency")
    if incident.service not in agency.services:
        return _no("service_not_granted", f"service {incident.service!r} is no longer granted")
    if action not in _LIVE_INCIDENT_ACTIONS:
        return None
    if incident.state == "closed":
        return _no("incident_closed", f"incident {incident.incident_id} is closed; its grant ended with it")
    if now >= incident.expires_at:
        return _no("incident_expired", f"incident {incident.incident_id} reached its time limit")
    return None


def _camera_problem(
    agency: AgencyPolicy, incident: IncidentView, camera: CameraPlace | None, now: float
) -> Decision | None:
    if camera is None:
        return _no("camera_required", "this action names a camera")
    if not agency.covers(camera.district):
        return _no("district_not_granted", f"camera {camera.camera_id} is in another district")
    if agency.scope == "own_district":
        return None
    radius = _radius(agency, incident, now)
    if camera.distance_m is None or camera.distance_m > radius:
        return _no("outside_grant", f"camera {camera.camera_id} is beyond the grant radius, {radius:.0f} m")
    return None


def in_grant(policy: Policy, incident: IncidentView, camera: CameraPlace, now: float) -> bool:
    """Whether the incident's grant covers the camera now (its district, its distance), to filter what
    `cameras.nearby` lists; `decide` stays the check of an action, including the incident's state."""
    agency = policy.agencies.get(incident.agency)
    return agency is not None and _camera_problem(agency, incident, camera, now) is None


def grant_radius_m(policy: Policy, incident: IncidentView, now: float) -> float:
    """How far from the incident's positions its grant reaches now (0 when the agency left the policy)."""
    agency = policy.agencies.get(incident.agency)
    return 0.0 if agency is None else _radius(agency, incident, now)


def _radius(agency: AgencyPolicy, incident: IncidentView, now: float) -> float:
    base = min(incident.radius_m, agency.max_radius_m.get(incident.service, 0.0))
    if not agency.radius_growth_m_per_min or agency.radius_cap_m is None:
        return base
    grown = base + agency.radius_growth_m_per_min * max(0.0, now - incident.opened_at) / 60.0
    return max(base, min(grown, agency.radius_cap_m))
