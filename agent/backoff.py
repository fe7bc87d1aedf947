"""When a camera may be tried again: capped exponential backoff with full jitter, per camera.

`full_jitter` is the agent's one backoff formula; uploads to S3 use it too.

Transient errors (unreachable, timeout, protocol, hostile) back off: the n-th consecutive failure waits a
uniform random time in [0, min(cap, base * 2**n)] ("full jitter": cameras that failed together, e.g. after
a switch reboot, do not come back in lockstep). A success resets the camera. `unauthorized` stops retrying
until the camera's ledger row or credentials change: repeating a rejected password can lock the account.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.credentials import Credentials
from agent.errors import CameraError
from agent.ledger import LedgerCamera

_RNG = random.Random()


def full_jitter(base_s: float, cap_s: float, failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` earlier consecutive failures: uniform in [0, ceiling]."""
    return (rng or _RNG).uniform(0, jitter_ceiling(base_s, cap_s, failures))


def jitter_ceiling(base_s: float, cap_s: float, failures: int) -> float:
    """The largest delay after ``failures`` earlier failures: base_s doubled per failure, at most cap_s."""
    # min() after the power would overflow for long outages: cap the exponent instead.
    return min(cap_s, base_s * 2.0 ** min(failures, 64))


class Backoff:
    """Delays for consecutive failures of one target."""

    def __init__(self, base_s: float = 5.0, cap_s: float = 300.0, rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The largest delay the next failure may get."""
        return jitter_ceiling(self.base_s, self.cap_s, self.failures)

    def next_delay(self) -> float:
        """Seconds to wait after one more failure."""
        delay = full_jitter(self.base_s, self.cap_s, self.failures, self._rng)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def fingerprint(camera: LedgerCamera, creds: Credentials | None) -> str:
    """Changes when the ledger row or the credentials change; never reveals the password."""
    h = hashlib.sha256(camera.model_dump_json().encode())
    if creds is not None:
        h.update(b"\0" + creds.username.encode() + b"\0" + creds.password.get_secret_value().encode())
    return h.hexdigest()


@dataclass
class _Entry:
    backoff: Backoff
    not_before: float = 0.0
    blocked_for: str | None = None  # fingerprint the camera rejected; None when not blocked
    last_error: CameraError | None = field(default=None, repr=False)


class RetryBook:
    """Camera id -> when it may be tried next. One per agent; the sweep consults it."""

    def __init__(
        self,
        base_s: float = 5.0,
        cap_s: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._base_s, self._cap_s = base_s, cap_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._entries: dict[str, _Entry] = {}

    def may_try(self, camera_id: str, key: str | None = None) -> bool:
        """True unless the camera is backing off, or blocked by `unauthorized` with unchanged `key`."""
        entry = self._entries.get(camera_id)
        if entry is None:
            return True
        if entry.blocked_for is not None:
            return key is not None and key != entry.blocked_for
        return self._clock() >= entry.not_before

    def not_before(self, camera_id: str) -> float | None:
        """Clock time of the next allowed try; None if allowed now, inf while blocked."""
        entry = self._entries.get(camera_id)
        if entry is None:
            return None
        if entry.blocked_for is not None:
            return float("inf")
        return entry.not_before if entry.not_before > self._clock() else None

    def success(self, camera_id: str) -> None:
        self._entries.pop(camera_id, None)

    def failure(self, camera_id: str, error: CameraError, key: str | None = None) -> float:
        """Record a failure; returns the delay before the next try (inf for `unauthorized`)."""
        entry = self._entries.get(camera_id)
        if entry is None:
            entry = self._entries[camera_id] = _Entry(Backoff(self._base_s, self._cap_s, self._rng))
        entry.last_error = error
        if not error.retryable:
            entry.blocked_for = key or ""
            return float("inf")
        entry.blocked_for = None
        delay = entry.backoff.next_delay()
        entry.not_before = self._clock() + delay
        return delay

    def blocked(self) -> list[str]:
        """Cameras waiting for a person to fix their credentials."""
        return sorted(cid for cid, e in self._entries.items() if e.blocked_for is not None)

    def __len__(self) -> int:
        return len(self._entries)
