"""Incidents as an agency's operator works them: open one and see the cameras around it across districts,
add a sighting, close it, let it expire; every bad input answered with a clear code, every grant change and
every camera listing in the audit trail (ASGI app over httpx; SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.collector.platform_harness import GANGNAM_OFFICE, INCHEON, SAMSEONG, Harness, harness


@pytest.fixture
async def h(tmp_path: Path, store_url: str) -> AsyncIterator[Harness]:
    async with harness(tmp_path, store_url) as built:
        yield built


def incident(
    no: str = "112-2026-0001", at: tuple[float, float] = GANGNAM_OFFICE, **kw: Any
) -> dict[str, Any]:
    body = {
        "incident_no": no,
        "service": "112-video",
        "type": "assault",
        "lat": at[0],
        "lon": at[1],
        "occurred_at": datetime.now(UTC).isoformat(),
        "radius_m": 800,
        "purpose": "identify the suspect's escape route",
    }
    return {**body, **kw}


async def open_incident(h: Harness, **kw: Any) -> dict[str, Any]:
    r = await h.client.post("/v1/incidents", json=incident(**kw), headers=h.auth())
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_open_returns_the_grant_and_the_cameras_nearest_first(h: Harness) -> None:
    body = await open_incident(h, radius_m=5000)  # asks more than the policy's 1,000 m for 112-video
    inc = body["incident"]
    assert (inc["state"], inc["district"], inc["agency"], inc["opened_by"]) == (
        "open",
        "gangnam",
        "police-112",
        "officer-kim",
    )
    assert inc["grant"]["radius_m"] == 1000 and inc["grant"]["scope"] == "incident"
    cams = body["cameras"]
    # Within 1 km: the office's two cameras, nearest first; Seolleung (1.4 km) and Mapo are beyond the grant.
    assert [c["camera_id"] for c in cams] == ["gn-office", "gn-office-2"]
    first, second = cams
    assert first["distance_m"] == 0 and 30 < second["distance_m"] < 60
    assert 0 < second["bearing_deg"] < 90  # north-east
    assert (second["district"], second["state"], second["agent_online"]) == ("gangnam", "online", True)
    assert second["last_seen"] is not None
    actions = [(a["action"], a["result"], a["incident"]) for a in h.audit()]
    assert actions == [
        ("incident.open", "allowed", inc["incident_id"]),
        ("cameras.nearby", "allowed", inc["incident_id"]),
    ]
    assert [s["camera_id"] for s in h.audit()[1]["subjects"]] == ["gn-office", "gn-office-2"]


async def test_the_same_incident_number_twice_is_409(h: Harness) -> None:
    await open_incident(h)
    r = await h.client.post("/v1/incidents", json=incident(), headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"]) == (409, "incident_exists")
    # Another agency may use the same number for its own incident.
    r = await h.client.post(
        "/v1/incidents", json=incident(service="119-dispatch", radius_m=300), headers=h.auth("fire-119")
    )
    assert r.status_code == 201


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"lat": INCHEON[0], "lon": INCHEON[1]}, "outside_service_area", "lat"),
        ({"lat": 91}, "invalid_request", "lat"),
        ({"service": "pizza"}, "invalid_request", "service"),
        ({"radius_m": -5}, "invalid_request", "radius_m"),
        ({"occurred_at": "yesterday"}, "invalid_request", "occurred_at"),
        ({"occurred_at": "2026-11-02T09:00:00"}, "invalid_request", "occurred_at"),  # no zone
        ({"purpose": ""}, "invalid_request", "purpose"),
        ({"surprise": 1}, "invalid_request", "surprise"),
        ({"arm_nearest": 0}, "invalid_request", "arm_nearest"),
    ],
)
async def test_bad_incidents_are_422_naming_the_field(
    h: Harness, change: dict[str, Any], code: str, field: str
) -> None:
    r = await h.client.post("/v1/incidents", json=incident(**change), headers=h.auth())
    assert r.status_code == 422
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)


async def test_a_missing_field_and_a_body_that_is_not_json_are_422(h: Harness) -> None:
    body = incident()
    del body["lat"]
    r = await h.client.post("/v1/incidents", json=body, headers=h.auth())
    assert (r.status_code, r.json()["error"]["field"]) == (422, "lat")
    r = await h.client.post("/v1/incidents", content=b"{not json", headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["field"]) == (
        422,
        "invalid_request",
        "body",
    )


async def test_a_sighting_widens_the_grant_to_cameras_near_it(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    url = f"/v1/incidents/{inc['incident_id']}"
    r = await h.client.post(
        f"{url}/positions", json={"lat": SAMSEONG[0], "lon": SAMSEONG[1]}, headers=h.auth()
    )
    assert r.status_code == 201, r.text
    assert [p["district"] for p in r.json()["grant"]["positions"]] == ["gangnam", "gangnam"]
    cams = (await h.client.get(f"{url}/cameras", headers=h.auth())).json()["cameras"]
    # Seolleung is 1.3 km from both positions: still outside.
    assert {c["camera_id"] for c in cams} == {"gn-office", "gn-office-2", "gn-samseong"}
    near_samseong = next(c for c in cams if c["camera_id"] == "gn-samseong")
    assert near_samseong["distance_m"] == 0  # measured from the sighting, its nearest position
    r = await h.client.post(f"{url}/positions", json={"lat": INCHEON[0], "lon": INCHEON[1]}, headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"]) == (422, "outside_service_area")
    assert [a["action"] for a in h.audit()][-2:] == ["incident.update", "cameras.nearby"]


async def test_close_ends_the_grant_and_the_listing_shows_it_closed(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    url = f"/v1/incidents/{inc['incident_id']}"
    r = await h.client.post(f"{url}/close", headers=h.auth())
    assert (r.status_code, r.json()["state"], r.json()["close_reason"]) == (200, "closed", "closed")
    r = await h.client.get(f"{url}/cameras", headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"]) == (403, "incident_closed")
    assert h.audit()[-1]["action"] == "cameras.nearby" and h.audit()[-1]["result"] == "refused"
    r = await h.client.post(f"{url}/close", headers=h.auth())
    assert r.status_code == 403
    listed = (await h.client.get("/v1/incidents", headers=h.auth())).json()["incidents"]
    assert [(i["incident_id"], i["state"]) for i in listed] == [(inc["incident_id"], "closed")]


async def test_the_service_time_limit_ends_an_incident(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    url = f"/v1/incidents/{inc['incident_id']}"
    h.clock.now += 12 * 3600  # 112-video incidents last 12 hours
    r = await h.client.get(url, headers=h.auth())
    assert (r.json()["state"], r.json()["close_reason"]) == ("closed", "expired")
    r = await h.client.get(f"{url}/cameras", headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"]) == (403, "incident_expired")


async def test_another_agencys_incident_is_refused_and_an_unknown_one_is_404(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    r = await h.client.get(f"/v1/incidents/{inc['incident_id']}/cameras", headers=h.auth("fire-119"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_own_incident")
    refusal = h.audit()[-1]
    assert (refusal["agency"], refusal["result"], refusal["code"]) == (
        "fire-119",
        "refused",
        "not_own_incident",
    )
    assert (await h.client.get("/v1/incidents", headers=h.auth("fire-119"))).json()["incidents"] == []
    r = await h.client.get("/v1/incidents/inc-nope", headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"]) == (404, "incident_not_found")


async def test_arming_the_nearest_queues_signed_arm_requests(h: Harness) -> None:
    body = await open_incident(h, arm_nearest=1)
    assert body["armed"] == ["gn-office"]
    [cmd] = h.outbox()
    assert (cmd["kind"], cmd["camera_id"], cmd["incident"], cmd["priority"]) == (
        "arm",
        "gn-office",
        body["incident"]["incident_id"],
        "112",
    )
    assert cmd["signature"]["key_id"] == h.signer.key_id and h.notified


async def test_district_control_room_opens_only_in_its_district(h: Harness) -> None:
    r = await h.client.post("/v1/incidents", json=incident(radius_m=100), headers=h.auth("gangnam-control"))
    assert r.status_code == 201
    # Scope own_district: every camera of Gangnam, whatever the radius, and none of Mapo.
    assert {c["camera_id"] for c in r.json()["cameras"]} == {
        "gn-office",
        "gn-office-2",
        "gn-seolleung",
        "gn-samseong",
    }
    from tests.collector.platform_harness import MAPO_OFFICE

    r = await h.client.post(
        "/v1/incidents", json=incident("x-2", at=MAPO_OFFICE), headers=h.auth("gangnam-control")
    )
    assert (r.status_code, r.json()["error"]["code"]) == (403, "district_not_granted")


async def test_a_missing_persons_search_area_grows_with_time_up_to_its_cap(h: Harness) -> None:
    body = incident("182-2026-0007", service="vulnerable", type="missing_child", radius_m=500)
    r = await h.client.post("/v1/incidents", json=body, headers=h.auth("vulnerable-support"))
    assert r.status_code == 201, r.text
    inc = r.json()["incident"]
    assert "gn-seolleung" not in {c["camera_id"] for c in r.json()["cameras"]}  # 1.4 km away
    h.clock.now += 20 * 60  # 50 m a minute: 1,500 m after 20 minutes
    url = f"/v1/incidents/{inc['incident_id']}"
    r = await h.client.get(f"{url}/cameras", headers=h.auth("vulnerable-support"))
    assert r.json()["radius_m"] == pytest.approx(1500)
    assert "gn-seolleung" in {c["camera_id"] for c in r.json()["cameras"]}
    h.clock.now += 24 * 3600  # capped at 5 km, however long the search lasts
    grant = (await h.client.get(url, headers=h.auth("vulnerable-support"))).json()["grant"]
    assert grant["radius_m"] == pytest.approx(5000)
