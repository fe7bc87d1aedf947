"""The /v1 read API as a client sees it: filters and pages computed by the index, the 25 districts, health,
and one error shape with a stable code and the field at fault (ASGI app over httpx; SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.access.gate import Access
from collector.access.settings import AccessSettings
from collector.access.tokens import issue_token
from collector.index.store import Batch, Store, open_store
from collector.platform.api import create_app
from collector.platform.context import Platform
from collector.platform.stores import ThreadStores
from contract.districts import DISTRICTS
from contract.messages import AnyMessage
from tests.collector.conftest import AUDIENCE, ISSUER, POLICY, agent, meta, status, write_jwks

HEALTH: dict[str, Any] = {"ok": True}


def seed(store: Store) -> None:
    batch = Batch()
    messages: list[AnyMessage] = [
        agent(),
        meta("cam-1", lat=37.4979, lon=127.0276),  # Gangnam station
        meta("cam-2", lat=37.5006, lon=127.0364),  # Yeoksam
        meta("cam-3", lat=37.5172, lon=127.0473),
        status("cam-1", "online", 0),
        status("cam-2", "offline", 0, ["no_response"]),
        status("cam-3", "degraded", 0),
        agent("mapo", "agent-mapo", state="offline"),
        meta("mapo-1", district="mapo", agent_id="agent-mapo", lat=37.5563, lon=126.9220),
    ]
    for m in messages:
        batch.add(m)
    store.apply(batch)


@pytest.fixture
async def client(store: Store, store_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with real token checks; requests carry a platform operator's token (cameras, districts)."""
    seed(store)
    HEALTH.clear()
    HEALTH["ok"] = True
    idp_key, jwks = write_jwks(tmp_path)
    settings = AccessSettings(jwks_file=jwks, issuer=ISSUER, audience=AUDIENCE, policy_file=POLICY)
    stores = ThreadStores(lambda: open_store(store_url))
    app = create_app(Platform(stores, lambda: dict(HEALTH), access=Access.from_settings(settings)))
    claims = {"sub": "ops-lee", "agency": "platform-ops", "role": "platform", "iss": ISSUER, "aud": AUDIENCE}
    token = issue_token(idp_key, ttl_s=600, **claims)
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as c:
        yield c
    stores.close()


async def test_cameras_filter_by_district_state_and_bbox(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/cameras", params={"district": "gangnam", "state": "online"})
    assert r.status_code == 200
    assert [c["camera_id"] for c in r.json()["cameras"]] == ["cam-1"]
    # Gangnam station and Yeoksam, not the camera further north-east.
    r = await client.get("/v1/cameras", params={"bbox": "127.02,37.49,127.04,37.51"})
    assert [c["camera_id"] for c in r.json()["cameras"]] == ["cam-1", "cam-2"]
    assert [c["place_district"] for c in r.json()["cameras"]] == ["seocho", "gangnam"]  # by the boundaries
    # While mapo's agent is offline nobody vouches for its camera: unknown, agent_offline.
    [mapo] = (await client.get("/v1/cameras", params={"district": "mapo"})).json()["cameras"]
    assert (mapo["state"], mapo["reasons"], mapo["agent_online"]) == ("unknown", ["agent_offline"], False)


async def test_cameras_pages_follow_the_cursor_without_gaps_or_repeats(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    pages = 0
    while True:
        body = (await client.get("/v1/cameras", params=params)).json()
        seen += [c["camera_id"] for c in body["cameras"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert (seen, pages) == (["cam-1", "cam-2", "cam-3", "mapo-1"], 2)


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"state": "sleepy"}, "invalid_request", "state"),
        ({"district": "atlantis"}, "invalid_request", "district"),
        ({"limit": 0}, "invalid_request", "limit"),
        ({"limit": "many"}, "invalid_request", "limit"),
        ({"bbox": "1,2,3"}, "invalid_bbox", "bbox"),
        ({"bbox": "127.1,37.5,127.0,37.6"}, "invalid_bbox", "bbox"),
        ({"cursor": "%%%"}, "invalid_cursor", "cursor"),
    ],
)
async def test_bad_queries_are_422_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, Any], code: str, field: str
) -> None:
    r = await client.get("/v1/cameras", params=params)
    assert r.status_code == 422
    error = r.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"]


async def test_unknown_routes_and_methods_answer_in_the_same_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/cameras")  # the old, unversioned path is gone
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = await client.delete("/v1/cameras")
    assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")


async def test_districts_list_all_25_with_presence_and_availability(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/districts")
    assert r.status_code == 200
    by_slug = {d["district"]: d for d in r.json()["districts"]}
    assert set(by_slug) == set(DISTRICTS)
    gangnam, mapo, jongno = by_slug["gangnam"], by_slug["mapo"], by_slug["jongno"]
    assert gangnam["by_state"] == {"online": 1, "offline": 1, "degraded": 1}
    assert gangnam["availability"] == pytest.approx(2 / 3)
    assert (gangnam["agent_online"], gangnam["name"]) == (True, "강남구")
    assert (mapo["agent_online"], mapo["by_state"], mapo["availability"]) == (False, {"unknown": 1}, 0.0)
    assert (jongno["agent_online"], jongno["cameras"], jongno["availability"]) == (None, 0, None)


async def test_healthz_is_503_with_the_reason_when_unhealthy(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/healthz")).status_code == 200
    HEALTH.update(ok=False, writer_alive=False)  # what a load balancer or Kubernetes probe must see
    r = await client.get("/v1/healthz")
    assert r.status_code == 503 and r.json()["writer_alive"] is False
    assert (
        await client.get("/v1/healthz", headers={"Authorization": ""})
    ).status_code == 503  # no token needed


@pytest.mark.parametrize("path", ["/v1/cameras", "/v1/districts"])
async def test_reads_need_a_token(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path, headers={"Authorization": ""})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "token_missing")
    assert r.headers["WWW-Authenticate"] == "Bearer"
