"""`Access`: the one object the API depends on for who may do what, built from the `[access]` settings.

Order per request: `authenticate` (401), `throttle` (429), then `decide` (403) — see docs/access.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from collector.access.decision import CameraPlace, IncidentView, grant_radius_m, in_grant
from collector.access.policy import AgencyPolicy, Policy, load_policy
from collector.access.ratelimit import RateLimiter
from collector.access.settings import AccessSettings
from collector.access.tokens import Principal, TokenVerifier
from common.settings import ConfigError

log = logging.getLogger(__name__)
WINDOW_S = 60.0


@dataclass
class Access:
    verifier: TokenVerifier
    policy: Policy
    settings: AccessSettings
    _limiters: dict[str, RateLimiter] = field(default_factory=dict, init=False)

    @classmethod
    def from_settings(cls, settings: AccessSettings) -> Access:
        """ConfigError (exit 2 at start) for an invalid policy file or an unreadable JWKS file."""
        if not settings.has_keys:
            log.warning("access: no jwks_file or jwks_url configured; every API request is refused (401)")
        try:
            verifier = TokenVerifier(settings)
        except ValueError as exc:
            raise ConfigError("access.jwks_file", [str(exc)]) from None
        return cls(verifier, load_policy(settings.policy_file), settings)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an Authorization header value; AuthError otherwise."""
        return self.verifier.verify(authorization)

    def throttle(self, principal: Principal, now: float) -> float | None:
        """None if the account and its agency are within their rates, else the Retry-After seconds."""
        account = self._limiter("account", principal.agency).hit(
            f"{principal.agency}/{principal.account}", now
        )
        if account is not None:
            return account
        return self._limiter("agency", principal.agency).hit(principal.agency, now)

    def agency(self, principal: Principal) -> AgencyPolicy | None:
        """The principal's agency policy (its limits: max_radius_m, max_window_s, ...), None if unknown."""
        return self.policy.agencies.get(principal.agency)

    def grant_radius_m(self, incident: IncidentView, now: float) -> float:
        return grant_radius_m(self.policy, incident, now)

    def in_grant(self, incident: IncidentView, camera: CameraPlace, now: float) -> bool:
        return in_grant(self.policy, incident, camera, now)

    def _limiter(self, kind: str, agency: str) -> RateLimiter:
        """One limiter per (kind, agency), since each agency may have its own rates; unknown agencies share
        the defaults (their requests are refused by `decide` anyway)."""
        policy = self.policy.agencies.get(agency)
        name = f"{kind}:{agency if policy is not None else '*'}"
        limiter = self._limiters.get(name)
        if limiter is None:
            rate = self.settings.rate
            per_min = {"account": rate.account_per_min, "agency": rate.agency_per_min}[kind]
            if policy is not None and policy.rate_per_min is not None:
                per_min = getattr(policy.rate_per_min, kind)
            limiter = self._limiters.setdefault(name, RateLimiter(per_min, WINDOW_S, rate.max_keys))
        return limiter
