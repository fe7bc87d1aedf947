"""Access at the API's door: every token problem is a 401 with its own code, a valid token outside its role or
grant is a 403 recorded in the audit trail, and a flood is a 429 with Retry-After (ASGI app over httpx)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collector.access.tokens import issue_token
from tests.collector.conftest import AUDIENCE, ISSUER, POLICY
from tests.collector.platform_harness import Harness, harness
from tests.collector.test_platform_incidents import incident


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path, f"sqlite://{tmp_path / 'index.db'}") as built:
        yield built


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_problems_are_401_each_with_its_code(h: Harness, tmp_path: Path) -> None:
    forger = tmp_path / "forger.key"  # a key the JWKS does not hold
    cases = {
        "token_missing": {},
        "token_invalid": bearer("not.a.jwt"),
        "token_expired": bearer(h.token(ttl_s=-120)),  # beyond the leeway
        "token_issuer": bearer(h.token(iss="https://elsewhere.example")),
        "token_audience": bearer(h.token(aud="another-api")),
    }
    forged = issue_token(
        forger, sub="x", agency="police-112", role="operator", iss=ISSUER, aud=AUDIENCE, ttl_s=60
    )
    for code, headers in cases.items():
        r = await h.client.get("/v1/incidents", headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (401, code), code
    r = await h.client.get("/v1/incidents", headers=bearer(forged))
    assert r.status_code == 401 and r.json()["error"]["code"].startswith("token_")
    assert h.audit() == []  # nobody to attribute a refusal to before the token holds


@pytest.mark.parametrize(
    ("agency", "role", "code"),
    [
        ("platform-ops", "platform", "no_video"),  # health and availability, never video
        ("audit-office", "auditor", "no_video"),
        ("fire-119", "operator", "service_not_granted"),  # 119 may not open a 112 incident
        ("nobody", "operator", "unknown_agency"),
    ],
)
async def test_a_valid_token_outside_its_rights_is_403_and_audited(
    h: Harness, agency: str, role: str, code: str
) -> None:
    r = await h.client.post("/v1/incidents", json=incident(), headers=h.auth(agency, role, "someone"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, code)
    [record] = h.audit()
    assert (record["action"], record["result"], record["code"], record["agency"], record["account"]) == (
        "incident.open",
        "refused",
        code,
        agency,
        "someone",
    )


async def test_a_flood_is_429_with_retry_after_per_account_then_per_agency(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        POLICY.read_text().replace(
            "rate_per_min = { account = 120, agency = 3000 }", "rate_per_min = { account = 3, agency = 5 }"
        )
    )
    async with harness(tmp_path, f"sqlite://{tmp_path / 'index.db'}", policy=policy) as h:
        kim, lee, park = h.auth(sub="kim"), h.auth(sub="lee"), h.auth(sub="park")
        for _ in range(3):
            assert (await h.client.get("/v1/incidents", headers=kim)).status_code == 200
        r = await h.client.get("/v1/incidents", headers=kim)
        assert (r.status_code, r.json()["error"]["code"]) == (429, "rate_limited")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Another account of the agency goes on, until the agency's own limit (5 a minute) is reached.
        for _ in range(2):
            assert (await h.client.get("/v1/incidents", headers=lee)).status_code == 200
        assert (await h.client.get("/v1/incidents", headers=park)).status_code == 429
        # The moving window: a minute later the account may ask again.
        h.clock.now += 61
        assert (await h.client.get("/v1/incidents", headers=kim)).status_code == 200


async def test_auditors_read_the_trail_in_chain_order_and_their_reading_is_recorded(h: Harness) -> None:
    await h.client.post("/v1/incidents", json=incident(), headers=h.auth())
    auditor = h.auth("audit-office", "auditor", "auditor-choi")
    page = (await h.client.get("/v1/audit", params={"limit": 1}, headers=auditor)).json()
    [first] = page["entries"]
    assert (first["seq"], first["record"]["action"], page["next_after"]) == (1, "incident.open", 1)
    rest = (await h.client.get("/v1/audit", params={"after": 1}, headers=auditor)).json()["entries"]
    assert [e["record"]["action"] for e in rest] == ["cameras.nearby", "audit.read"]
    assert rest[0]["prev_hash"] == first["hash"]
    # Who works incidents never reads the trail about them.
    r = await h.client.get("/v1/audit", headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"]) == (403, "role_forbidden")
