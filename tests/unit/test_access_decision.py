"""The decision table: every agency of deploy/policy.example.toml against every action, then the grant edges
(closed and expired incidents, distance beyond the radius, the growing vulnerable radius, own districts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.access.decision import CameraPlace, IncidentView, decide, grant_radius_m, in_grant
from collector.access.policy import ACTIONS, load_policy
from collector.access.tokens import Principal

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "deploy" / "policy.example.toml")
T0 = 1_800_000_000.0
NOW = T0 + 600  # ten minutes into every incident

POLICE = Principal("kim", "police-112", "operator")
POLICE_SUP = Principal("lee", "police-112", "supervisor")
FIRE = Principal("park", "fire-119", "operator")
DISASTER = Principal("choi", "disaster-southeast", "operator")
VULNERABLE = Principal("jung", "vulnerable-support", "operator")
GANGNAM = Principal("kang", "gangnam-control", "operator")
PLATFORM = Principal("yoon", "platform-ops", "platform")
AUDITOR = Principal("han", "audit-office", "auditor")

OPERATOR = {
    "incident.open",
    "incident.read",
    "incident.update",
    "incident.close",
    "cameras.nearby",
    "cameras.list",
    "districts.list",
    "clip.request",
    "clip.read",
    "clip.playback",
    "live",
}
VIDEO = OPERATOR - {"cameras.list", "districts.list"}
# What each principal may do in its own good case (own open incident, granted service, camera close by in a
# covered district). Anything else is refused: `no_video` for agencies without video, else `role_forbidden`.
ALLOWED = {
    POLICE: OPERATOR,
    POLICE_SUP: OPERATOR | {"health.read"},
    FIRE: OPERATOR,
    DISASTER: OPERATOR,
    VULNERABLE: OPERATOR,
    GANGNAM: OPERATOR,
    PLATFORM: {"health.read", "districts.list", "cameras.list"},
    AUDITOR: {"audit.read", "audit.report"},
}
HOME = {
    "police-112": ("112-video", "jung"),
    "fire-119": ("119-dispatch", "mapo"),
    "disaster-southeast": ("disaster", "songpa"),
    "vulnerable-support": ("vulnerable", "nowon"),
    "gangnam-control": ("112-video", "gangnam"),
    "platform-ops": ("112-video", "jung"),
    "audit-office": ("112-video", "jung"),
}


def incident(agency="police-112", service="112-video", district="jung", **kw) -> IncidentView:
    values = {
        "incident_id": "inc-1",
        "agency": agency,
        "service": service,
        "district": district,
        "state": "open",
        "opened_at": T0,
        "expires_at": T0 + 3600,
        "radius_m": 1000.0,
        "positions": ((37.56, 126.98, T0),),
    }
    values.update(kw)
    return IncidentView(**values)


def cam(distance_m: float | None = 100.0, district="jung") -> CameraPlace:
    return CameraPlace("cam-1", district, distance_m)


@pytest.mark.parametrize("principal", list(ALLOWED), ids=lambda p: f"{p.agency}/{p.role}")
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_agency_and_action(principal: Principal, action: str) -> None:
    service, district = HOME[principal.agency]
    got = decide(
        POLICY,
        principal,
        action,
        incident=incident(principal.agency, service, district),
        camera=cam(10.0, district),
        service=service,
        district=district,
        now=NOW,
    )
    if action in ALLOWED[principal]:
        assert (got.allowed, got.code) == (True, "ok"), got.reason
    elif principal in (PLATFORM, AUDITOR) and action in VIDEO:
        assert (got.allowed, got.code) == (False, "no_video"), got.reason
    else:
        assert (got.allowed, got.code) == (False, "role_forbidden"), got.reason


def case(name: str, principal: Principal, action: str, code: str, **context: object) -> object:
    """One row: `principal` does `action` with `context` (incident, camera, service, district, now)."""
    return pytest.param(principal, action, {"now": NOW, **context}, code, id=name)


DISASTER_INC = incident("disaster-southeast", "disaster", "songpa", radius_m=3000.0)
GANGNAM_INC = incident("gangnam-control", district="gangnam")
FIRE_INC = incident("fire-119", "119-dispatch")
CLOSED = incident(state="closed")
INC = incident()

# fmt: off
CASES = [
    case("112 opens 112-video", POLICE, "incident.open", "ok", service="112-video", district="jung"),
    case("112 opens 112-dispatch anywhere", POLICE, "incident.open", "ok",
         service="112-dispatch", district="gangseo"),
    case("112 may not open 119", POLICE, "incident.open", "service_not_granted", service="119-dispatch"),
    case("112 may not open disaster", POLICE, "incident.open", "service_not_granted", service="disaster"),
    case("open without service", POLICE, "incident.open", "service_not_granted", district="jung"),
    case("camera inside radius", POLICE, "clip.request", "ok", incident=INC, camera=cam(999)),
    case("camera beyond radius", POLICE, "clip.request", "outside_grant", incident=INC, camera=cam(1001)),
    case("camera without position", POLICE, "clip.request", "outside_grant", incident=INC, camera=cam(None)),
    case("asked radius is the grant", POLICE, "clip.request", "outside_grant",
         incident=incident(radius_m=300.0), camera=cam(400)),
    case("radius capped per service", POLICE, "clip.playback", "outside_grant",
         incident=incident(radius_m=5000.0), camera=cam(1500)),
    case("closed: no clips", POLICE, "clip.request", "incident_closed", incident=CLOSED, camera=cam()),
    case("closed: no playback", POLICE, "clip.playback", "incident_closed", incident=CLOSED, camera=cam()),
    case("closed: no nearby", POLICE, "cameras.nearby", "incident_closed", incident=CLOSED),
    case("closed: no update", POLICE, "incident.update", "incident_closed", incident=CLOSED, district="jung"),
    case("closed: no second close", POLICE, "incident.close", "incident_closed", incident=CLOSED),
    case("closed: still readable", POLICE, "incident.read", "ok", incident=CLOSED),
    case("closed: clip state readable", POLICE, "clip.read", "ok", incident=CLOSED),
    case("expired incident", POLICE, "clip.request", "incident_expired",
         incident=INC, camera=cam(), now=T0 + 3600),
    case("one second before expiry", POLICE, "clip.request", "ok",
         incident=INC, camera=cam(), now=T0 + 3599),
    case("another agency's incident", POLICE, "clip.request", "not_own_incident",
         incident=FIRE_INC, camera=cam()),
    case("other's incident unreadable", POLICE, "incident.read", "not_own_incident", incident=FIRE_INC),
    case("another agency's clip unreadable", POLICE, "clip.read", "not_own_incident", incident=FIRE_INC),
    case("nearby needs an incident", POLICE, "cameras.nearby", "incident_required"),
    case("clip needs a camera", POLICE, "clip.request", "camera_required", incident=INC),
    case("own incident list", POLICE, "incident.read", "ok"),
    case("unknown role", Principal("x", "police-112", "admin"), "incident.read", "role_forbidden"),
    case("role of another agency", Principal("x", "police-112", "auditor"), "audit.read", "role_forbidden"),
    case("unknown agency", Principal("x", "nis", "operator"), "incident.read", "unknown_agency"),
    case("119 opens 119-dispatch", FIRE, "incident.open", "ok", service="119-dispatch", district="mapo"),
    case("119 may not open 112-video", FIRE, "incident.open", "service_not_granted", service="112-video"),
    case("119 near its incident", FIRE, "clip.request", "ok", incident=FIRE_INC, camera=cam(499)),
    case("119 beyond 500 m", FIRE, "clip.request", "outside_grant", incident=FIRE_INC, camera=cam(501)),
    case("disaster in its district", DISASTER, "incident.open", "ok", service="disaster", district="gangnam"),
    case("disaster outside its districts", DISASTER, "incident.open", "district_not_granted",
         service="disaster", district="jongno"),
    case("disaster outside Seoul", DISASTER, "incident.open", "district_not_granted", service="disaster"),
    case("disaster may not open vulnerable", DISASTER, "incident.open", "service_not_granted",
         service="vulnerable", district="gangnam"),
    case("disaster camera in its district", DISASTER, "clip.request", "ok",
         incident=DISASTER_INC, camera=cam(2500, "gangdong")),
    case("disaster camera across the border", DISASTER, "clip.request", "district_not_granted",
         incident=DISASTER_INC, camera=cam(200, "gwangjin")),
    case("disaster sighting in its districts", DISASTER, "incident.update", "ok",
         incident=DISASTER_INC, district="seocho"),
    case("disaster sighting elsewhere", DISASTER, "incident.update", "district_not_granted",
         incident=DISASTER_INC, district="mapo"),
    case("disaster lists its district", DISASTER, "cameras.list", "ok", district="gangnam"),
    case("disaster lists another", DISASTER, "cameras.list", "district_not_granted", district="jongno"),
    case("disaster lists all", DISASTER, "cameras.list", "district_not_granted"),
    case("control room, own camera far away", GANGNAM, "clip.request", "ok",
         incident=GANGNAM_INC, camera=cam(9000, "gangnam")),
    case("control room, own camera without position", GANGNAM, "clip.playback", "ok",
         incident=GANGNAM_INC, camera=cam(None, "gangnam")),
    case("control room, other district's camera", GANGNAM, "clip.request", "district_not_granted",
         incident=GANGNAM_INC, camera=cam(50, "seocho")),
    case("control room, closed incident", GANGNAM, "clip.request", "incident_closed",
         incident=incident("gangnam-control", district="gangnam", state="closed"), camera=cam(50, "gangnam")),
    case("control room opens at home", GANGNAM, "incident.open", "ok",
         service="vulnerable", district="gangnam"),
    case("control room opens next door", GANGNAM, "incident.open", "district_not_granted",
         service="112-video", district="seocho"),
    case("control room lists own cameras", GANGNAM, "cameras.list", "ok", district="gangnam"),
    case("control room lists others", GANGNAM, "cameras.list", "district_not_granted", district="seocho"),
    case("live inside radius", POLICE, "live", "ok", incident=INC, camera=cam(999)),
    case("live beyond radius", POLICE, "live", "outside_grant", incident=INC, camera=cam(1001)),
    case("live needs a camera", POLICE, "live", "camera_required", incident=INC),
    case("live needs an incident", POLICE, "live", "incident_required", camera=cam()),
    case("closed: no live", POLICE, "live", "incident_closed", incident=CLOSED, camera=cam()),
    case("expired: no live", POLICE, "live", "incident_expired", incident=INC, camera=cam(), now=T0 + 3600),
    case("live of another agency's incident", POLICE, "live", "not_own_incident",
         incident=FIRE_INC, camera=cam()),
    case("control room live, own district", GANGNAM, "live", "ok",
         incident=GANGNAM_INC, camera=cam(9000, "gangnam")),
    case("control room live, next door", GANGNAM, "live", "district_not_granted",
         incident=GANGNAM_INC, camera=cam(50, "seocho")),
    case("platform never sees live", PLATFORM, "live", "no_video",
         incident=incident("platform-ops"), camera=cam()),
    case("auditor never sees live", AUDITOR, "live", "no_video",
         incident=incident("audit-office"), camera=cam()),
    case("platform lists all cameras", PLATFORM, "cameras.list", "ok"),
    case("platform never plays video", PLATFORM, "clip.playback", "no_video",
         incident=incident("platform-ops"), camera=cam()),
    case("auditor never opens incidents", AUDITOR, "incident.open", "no_video",
         service="112-video", district="jung"),
    case("auditor never sees cameras near", AUDITOR, "cameras.nearby", "no_video",
         incident=incident("audit-office")),
]
# fmt: on


@pytest.mark.parametrize(("principal", "action", "context", "code"), CASES)
def test_decision_table(principal: Principal, action: str, context: dict, code: str) -> None:
    got = decide(POLICY, principal, action, **context)
    assert (got.allowed, got.code) == (code == "ok", code), got.reason


def vulnerable_incident(**kw) -> IncidentView:
    return incident("vulnerable-support", "vulnerable", "nowon", radius_m=400.0, **kw)


@pytest.mark.parametrize(
    ("minutes", "radius"),
    [(-5, 400.0), (0, 400.0), (1, 450.0), (10, 900.0), (60, 3400.0), (92, 5000.0), (600, 5000.0)],
)
def test_vulnerable_radius_grows_with_time_up_to_the_cap(minutes: float, radius: float) -> None:
    assert grant_radius_m(POLICY, vulnerable_incident(), T0 + minutes * 60) == pytest.approx(radius)


def test_vulnerable_grant_reaches_a_camera_once_the_radius_has_grown() -> None:
    inc = vulnerable_incident(expires_at=T0 + 72 * 3600)
    far = cam(1000.0, "nowon")
    at = [
        decide(POLICY, VULNERABLE, "clip.request", incident=inc, camera=far, now=T0 + m * 60).code
        for m in (0, 11, 13, 24 * 60)
    ]
    assert at == ["outside_grant", "outside_grant", "ok", "ok"]
    beyond_cap = cam(5001.0, "nowon")
    assert decide(
        POLICY, VULNERABLE, "clip.request", incident=inc, camera=beyond_cap, now=T0 + 86400
    ).code == ("outside_grant")


def test_radius_of_other_services_does_not_grow() -> None:
    assert grant_radius_m(POLICY, incident(), T0 + 6 * 3600) == 1000.0


def test_grant_of_an_agency_no_longer_in_the_policy_is_empty() -> None:
    assert grant_radius_m(POLICY, incident("dissolved-agency"), NOW) == 0.0


@pytest.mark.parametrize(
    ("inc", "camera", "covered"),
    [
        (incident(), cam(999), True),
        (incident(), cam(1001), False),
        (incident(), cam(None), False),
        (incident("gangnam-control", district="gangnam"), cam(9000, "gangnam"), True),
        (incident("gangnam-control", district="gangnam"), cam(10, "seocho"), False),
        (incident("disaster-southeast", "disaster", "songpa", radius_m=3000.0), cam(10, "gwangjin"), False),
        (incident("dissolved-agency"), cam(1), False),
    ],
)
def test_in_grant_filters_nearby_listings(inc: IncidentView, camera: CameraPlace, covered: bool) -> None:
    assert in_grant(POLICY, inc, camera, NOW) is covered
