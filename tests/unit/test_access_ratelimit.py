"""The moving-window limiter: Retry-After, no fixed-window bursts, bounded memory."""

from __future__ import annotations

import pytest

from collector.access.ratelimit import RateLimiter

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
