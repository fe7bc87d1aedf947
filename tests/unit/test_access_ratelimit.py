"""The moving-window limiter (Retry-After, no fixed-window bursts, bounded memory) and the Access facade's
per-account and per-agency limits from the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.access.gate import Access
from collector.access.ratelimit import RateLimiter
from collector.access.settings import AccessSettings, RateSettings
from collector.access.tokens import AuthError, Principal, issue_token, jwks_for
from common.signing import key_id, load_or_create_key

ROOT = Path(__file__).resolve().parents[2]
T = 1_800_000_000.0


def test_limit_within_the_window_then_retry_after() -> None:
    limiter = RateLimiter(limit=3, window_s=60)
    assert [limiter.hit("kim", T + s) for s in (0, 10, 20)] == [None, None, None]
    assert limiter.hit("kim", T + 30) == pytest.approx(30.0)  # the hit at T leaves the window at T + 60
    assert limiter.hit("kim", T + 59.5) == pytest.approx(0.5)
    assert limiter.hit("kim", T + 60) is None
    assert limiter.hit("kim", T + 61) == pytest.approx(9.0)  # now the hit at T + 10 is the oldest


def test_moving_window_allows_no_burst_at_a_window_boundary() -> None:
    """A fixed window would allow 2 x limit around its boundary; a moving one never more than limit."""
    limiter = RateLimiter(limit=10, window_s=60)
    allowed = [t for t in (T + 50 + i for i in range(20)) if limiter.hit("kim", t) is None]
    assert len(allowed) == 10


def test_refused_requests_do_not_count() -> None:
    limiter = RateLimiter(limit=1, window_s=60)
    assert limiter.hit("kim", T) is None
    for s in range(1, 60):
        assert limiter.hit("kim", T + s) is not None
    assert limiter.hit("kim", T + 60) is None  # waiting as told is enough, retries did not extend the wait


def test_keys_are_independent() -> None:
    limiter = RateLimiter(limit=1, window_s=60)
    assert limiter.hit("kim", T) is None
    assert limiter.hit("lee", T) is None
    assert limiter.hit("kim", T + 1) is not None


def test_memory_is_bounded_by_forgetting_the_least_recent_keys() -> None:
    limiter = RateLimiter(limit=1, window_s=60, max_keys=100)
    assert limiter.hit("busy", T) is None
    for i in range(1000):
        limiter.hit(f"account-{i}", T + 1)
        assert limiter.hit("busy", T + 1) is not None  # kept: it is recently used
    assert len(limiter) == 100


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(limit=0, window_s=60)


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
    assert gate.decide(principal, "incident.open", service="112-video", district="jung", now=T).allowed
    assert gate.decide(principal, "audit.read", now=T).code == "role_forbidden"
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
        gate.decide(Principal("a", "police-112", "operator"), "incident.read", now=T).code == "unknown_agency"
    )
