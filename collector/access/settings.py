"""The `[access]` section of the collector settings: where token keys and the agency policy come from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# One asymmetric algorithm, never a list: mixing families is how a public key ends up used as an HMAC secret.
Algorithm = Literal["EdDSA", "RS256", "ES256"]


class RateSettings(BaseModel):
    """Default request limits per moving minute; an agency's `rate_per_min` in the policy overrides them."""

    model_config = ConfigDict(extra="forbid")

    account_per_min: int = Field(default=120, ge=1)
    agency_per_min: int = Field(default=1200, ge=1)
    # Accounts and agencies remembered at once; the least recently seen are forgotten beyond this.
    max_keys: int = Field(default=100_000, ge=100)


class AccessSettings(BaseModel):
    """Token verification and policy. Fails closed: without keys every request is refused (401), without a
    policy file no agency may do anything (403)."""

    model_config = ConfigDict(extra="forbid")

    jwks_file: Path | None = None
    jwks_url: str | None = Field(default=None, pattern=r"^https?://")
    # How long keys fetched from jwks_url are reused. A token with an unknown `kid` (a rotated key) refetches
    # them sooner, at most once per jwks_refetch_s, so that forged kids cannot flood the identity provider.
    jwks_cache_s: float = Field(default=300.0, gt=0)
    jwks_refetch_s: float = Field(default=30.0, ge=1)
    jwks_timeout_s: float = Field(default=5.0, gt=0, le=60)
    issuer: str = ""
    audience: str = ""
    algorithm: Algorithm = "EdDSA"
    # Clock skew tolerated on exp/nbf/iat; RFC 7519 asks for "no more than a few minutes", we allow a minute.
    leeway_s: float = Field(default=30.0, ge=0, le=60)
    policy_file: Path | None = None
    rate: RateSettings = RateSettings()

    @model_validator(mode="after")
    def _keys_need_issuer_and_audience(self) -> AccessSettings:
        if self.jwks_file is not None and self.jwks_url is not None:
            raise ValueError("set jwks_file or jwks_url, not both")
        if self.has_keys and not (self.issuer and self.audience):
            raise ValueError("issuer and audience are required with jwks_file or jwks_url")
        return self

    @property
    def has_keys(self) -> bool:
        return self.jwks_file is not None or self.jwks_url is not None
