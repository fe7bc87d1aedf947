"""The API calls the console is built on, as a client sees them: who am I and what may I do (`/v1/me`),
every camera as compact arrays for a city map (`/v1/cameras/points`), and the auditor's search, chain status
and monthly report (`/v1/audit...`), each refused to roles the policy does not name and each on record."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.collector.platform_harness import CAMERAS, Harness, harness
from tests.collector.test_platform_incidents import open_incident


@pytest.fixture
async def h(tmp_path: Path, store_url: str) -> AsyncIterator[Harness]:
    async with harness(tmp_path, store_url) as built:
        yield built


async def test_me_names_the_account_and_only_the_actions_its_role_may_take(h: Harness) -> None:
    r = await h.client.get("/v1/me", headers=h.auth())
    assert r.status_code == 200, r.text
    me = r.json()
    assert (me["sub"], me["agency"], me["role"], me["video"]) == (
        "officer-kim",
        "police-112",
        "operator",
        True,
    )
    assert {"incident.open", "clip.request", "clip.playback"} <= set(me["actions"])
    assert "audit.read" not in me["actions"] and "health.read" not in me["actions"]
    assert me["limits"]["max_window_s"] == 600 and me["limits"]["max_radius_m"]["112-video"] == 1000

    auditor = (await h.client.get("/v1/me", headers=h.auth("audit-office", "auditor", "lee"))).json()
    assert (auditor["video"], auditor["actions"]) == (False, ["audit.read", "audit.report"])
    ops = (await h.client.get("/v1/me", headers=h.auth("platform-ops", "platform", "park"))).json()
    assert ops["actions"] == ["cameras.list", "districts.list", "health.read"]
    stranger = (await h.client.get("/v1/me", headers=h.auth("nobody", "operator", "x"))).json()
    assert (stranger["agency_name"], stranger["actions"], stranger["limits"]) == (None, [], None)
    assert (await h.client.get("/v1/me")).status_code == 401


async def test_camera_points_give_every_camera_as_parallel_arrays(h: Harness) -> None:
    r = await h.client.get("/v1/cameras/points", headers=h.auth("platform-ops", "platform", "park"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(CAMERAS)
    points = {
        cid: (body["districts"][d], (lat, lon), body["states"][s])
        for cid, lat, lon, d, s in zip(
            body["camera_ids"], body["lat"], body["lon"], body["district"], body["state"], strict=True
        )
    }
    assert points == {cid: (district, place, "online") for cid, (district, place) in CAMERAS.items()}

    mapo = (await h.client.get("/v1/cameras/points", params={"district": "mapo"}, headers=h.auth())).json()
    assert (mapo["camera_ids"], mapo["districts"]) == (["mp-office"], ["mapo"])
    # A district control room sees its own district's cameras only; the auditor none.
    gangnam = h.auth("gangnam-control", "operator", "choi")
    refused = await h.client.get("/v1/cameras/points", headers=gangnam)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "district_not_granted")
    auditor = h.auth("audit-office", "auditor", "lee")
    refused = await h.client.get("/v1/cameras/points", headers=auditor)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "role_forbidden")


async def test_an_auditor_searches_the_trail_by_account_incident_and_camera(h: Harness) -> None:
    opened = await open_incident(h)
    incident = opened["incident"]["incident_id"]
    await h.client.get(f"/v1/incidents/{incident}/cameras", headers=h.auth())
    await h.client.get("/v1/cameras", headers=h.auth("fire-119", "operator", "park"))
    auditor = h.auth("audit-office", "auditor", "lee")

    async def search(**params: str) -> list[dict[str, object]]:
        r = await h.client.get("/v1/audit", params=params, headers=auditor)
        assert r.status_code == 200, r.text
        return [e["record"] for e in r.json()["entries"]]

    by_incident = await search(incident=incident)
    assert by_incident and {r["incident"] for r in by_incident} == {incident}
    assert {(r["account"], r["action"]) for r in by_incident} >= {("officer-kim", "cameras.nearby")}
    by_camera = await search(camera="gn-office-2")
    assert by_camera and all(
        any(s["camera_id"] == "gn-office-2" for s in r["subjects"])
        for r in by_camera  # type: ignore[attr-defined]
    )
    assert {r["account"] for r in await search(agency="police-112", account="officer-kim")} == {"officer-kim"}
    assert await search(account="nobody-at-all") == []
    searches = [r for r in await search(account="lee") if r["action"] == "audit.read"]
    assert searches[-1]["detail"] == {"after": 0, "count": 0, "account": "nobody-at-all"}

    refused = await h.client.get("/v1/audit", params={"incident": incident}, headers=h.auth())
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "role_forbidden")


async def test_the_monthly_report_is_a_zip_of_the_review_and_every_districts_ledger(h: Harness) -> None:
    await open_incident(h)
    month = datetime.now(UTC).strftime("%Y-%m")
    auditor = h.auth("audit-office", "auditor", "lee")
    r = await h.client.get("/v1/audit/report", params={"month": month}, headers=auditor)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        names = set(archive.namelist())
        accounts = list(csv.DictReader(io.StringIO(archive.read(f"review-{month}-accounts.csv").decode())))
    assert f"ledger-{month}-gangnam.csv" in names and len([n for n in names if n.startswith("ledger-")]) == 25
    assert any(a["account"] == "officer-kim" and int(a["accesses"]) >= 1 for a in accounts)
    reports = [a for a in h.audit() if a["action"] == "audit.report"]
    assert [(a["account"], a["result"]) for a in reports] == [("lee", "allowed")]

    bad = await h.client.get("/v1/audit/report", params={"month": "2026-13"}, headers=auditor)
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "month")
    refused = await h.client.get("/v1/audit/report", params={"month": month}, headers=h.auth())
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "role_forbidden")


async def test_chain_status_needs_a_checkpoint_bucket(h: Harness) -> None:
    auditor = h.auth("audit-office", "auditor", "lee")
    r = await h.client.get("/v1/audit/verify", headers=auditor)
    assert (r.status_code, r.json()["error"]["code"]) == (503, "audit_unverifiable")
