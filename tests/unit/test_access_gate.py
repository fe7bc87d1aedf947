"""The Access facade the API depends on: authenticate, throttle by the policy's rates, decide; fail closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.access.decision import decide
from collector.access.gate import Access
from collector.access.settings import AccessSettings, RateSettings
from collector.access.tokens import AuthError, Principal, issue_token, jwks_for
from common.settings import ConfigError
from common.signing import key_id, load_or_create_key

ROOT = Path(__file__).resolve().parents[2]
T = 1_800_000_000.0


def access(tmp_path: Path, rate: RateSettings) -> tuple[Access, Path]:
    key_path = tmp_path / "dev.key"
    public = load_or_create_key(key_path).public_key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_for(public, key_id(public))))
    settings = AccessSettings(
        jwks_file=jwks,
        issuer="dev",
        audience="cctv",
        policy_file=ROOT / "deploy" / "policy.example.toml",
        rate=rate,
    )
    return Access.from_settings(settings), key_path


def test_access_limits_accounts_and_agencies_with_policy_rates(tmp_path: Path) -> None:
    gate, _ = access(tmp_path, RateSettings(account_per_min=2, agency_per_min=3))
    fire = [Principal(f"f{i}", "fire-119", "operator") for i in range(3)]
    assert [gate.throttle(fire[0], T + i) for i in range(3)] == [None, None, pytest.approx(58.0)]
    assert gate.throttle(fire[1], T + 3) is None
    assert gate.throttle(fire[2], T + 4) == pytest.approx(56.0)  # the agency's 3 per minute are used up
    police = Principal("kim", "police-112", "operator")  # the policy gives police 120 per account
    assert all(gate.throttle(police, T + i / 10) is None for i in range(120))
    assert gate.throttle(police, T + 13) == pytest.approx(47.0)


def test_access_authenticates_then_decides(tmp_path: Path) -> None:
    gate, key_path = access(tmp_path, RateSettings())
    token = issue_token(
        key_path, sub="kim", agency="police-112", role="operator", iss="dev", aud="cctv", ttl_s=60
    )
    principal = gate.authenticate(f"Bearer {token}")
    assert decide(
        gate.policy, principal, "incident.open", service="112-video", district="jung", now=T
    ).allowed
    assert decide(gate.policy, principal, "audit.read", now=T).code == "role_forbidden"
    with pytest.raises(AuthError):
        gate.authenticate("Bearer " + token[:-4] + "AAAA")


def test_access_without_configuration_fails_closed(tmp_path: Path) -> None:
    gate = Access.from_settings(AccessSettings())
    token = issue_token(
        tmp_path / "k.key", sub="a", agency="police-112", role="operator", iss="", aud="x", ttl_s=9
    )
    with pytest.raises(AuthError):
        gate.authenticate(f"Bearer {token}")
    assert (
        decide(gate.policy, Principal("a", "police-112", "operator"), "incident.read", now=T).code
        == "unknown_agency"
    )


def test_access_refuses_to_start_with_an_unreadable_key_file(tmp_path: Path) -> None:
    settings = AccessSettings(jwks_file=tmp_path / "missing.json", issuer="dev", audience="cctv")
    with pytest.raises(ConfigError) as info:
        Access.from_settings(settings)
    assert "missing.json" in info.value.errors[0]
