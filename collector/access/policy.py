"""The agency policy file (TOML): which agencies exist, which roles they hold, and what each may do.

Loaded and validated at start and by `cctv-collector validate-config`; see docs/access.md and
deploy/policy.example.toml. Everything an agency may do is here as data; `decision.decide` reads it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.settings import ConfigError, error_lines, read_toml
from contract.districts import DISTRICTS
from contract.messages import Service

Action = Literal[
    "incident.open",
    "incident.read",
    "incident.update",
    "incident.close",
    "cameras.nearby",
    "cameras.list",
    "districts.list",
    "clip.request",
    "clip.read",
    "clip.playback",
    "live",
    "health.read",
    "audit.read",
    "audit.report",
]
ACTIONS: frozenset[Action] = frozenset(Action.__args__)  # type: ignore[attr-defined]
# Actions that see or touch footage, or the places and times of the people in it.
VIDEO_ACTIONS: frozenset[Action] = frozenset(
    {
        "incident.open",
        "incident.read",
        "incident.update",
        "incident.close",
        "cameras.nearby",
        "clip.request",
        "clip.read",
        "clip.playback",
        "live",
    }
)
AUDIT_ACTIONS: frozenset[Action] = frozenset({"audit.read", "audit.report"})
Scope = Literal["incident", "own_district", "none"]
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class RolePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    actions: list[Action] = Field(min_length=1)


class RatePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: int = Field(ge=1)
    agency: int = Field(ge=1)


class AgencyPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    roles: list[str] = Field(min_length=1)
    # False: never any footage, incident or camera place, whatever its roles say (platform, auditor).
    video: bool = False
    services: list[Service] = []
    districts: list[str] | Literal["all"] = []
    # incident: cameras within the incident's grant radius; own_district: every camera of its districts, still
    # only for an open incident; none: no cameras at all.
    scope: Scope = "none"
    max_radius_m: dict[Service, float] = {}
    incident_max_hours: dict[Service, float] = {}
    # The grant radius grows by this much per minute since the incident opened, up to radius_cap_m.
    radius_growth_m_per_min: float = Field(default=0.0, ge=0)
    radius_cap_m: float | None = Field(default=None, gt=0)
    max_window_s: int = Field(default=300, ge=1, le=3600)
    max_past_s: int = Field(default=86_400, ge=0)
    max_future_s: int = Field(default=300, ge=0, le=3600)
    rate_per_min: RatePolicy | None = None
    # Live view: sessions open at once for the whole agency (more answer 429), and how long one runs before it
    # must be renewed.
    live_max_sessions: int = Field(default=10, ge=0, le=10_000)
    live_max_s: int = Field(default=600, ge=10, le=3600)

    @field_validator("districts")
    @classmethod
    def _known_districts(cls, value: list[str] | Literal["all"]) -> list[str] | Literal["all"]:
        unknown = [] if value == "all" else sorted(set(value) - DISTRICTS.keys())
        if unknown:
            raise ValueError(f"unknown district(s) {', '.join(unknown)}; slugs are in contract/districts.py")
        return value

    @field_validator("max_radius_m", "incident_max_hours")
    @classmethod
    def _positive(cls, value: dict[Service, float]) -> dict[Service, float]:
        if any(v <= 0 for v in value.values()):
            raise ValueError("every value must be positive")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AgencyPolicy:
        if not self.video:
            if self.services or self.scope != "none":
                raise ValueError("an agency without video has no services and scope 'none'")
            return self
        if not self.services or self.scope == "none" or not self.districts:
            raise ValueError("an agency with video needs services, districts and a scope other than 'none'")
        if self.scope == "own_district" and self.districts == "all":
            raise ValueError("scope 'own_district' needs its districts listed, not 'all'")
        for name in ("max_radius_m", "incident_max_hours"):
            if set(getattr(self, name)) != set(self.services):
                raise ValueError(f"{name} needs exactly one value for each of its services")
        if self.radius_growth_m_per_min and self.radius_cap_m is None:
            raise ValueError("radius_growth_m_per_min needs radius_cap_m")
        return self

    def covers(self, district: str | None) -> bool:
        """Whether this agency's districts include `district` (None, outside Seoul: only for 'all')."""
        return self.districts == "all" or district in self.districts


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: dict[str, RolePolicy] = {}
    agencies: dict[str, AgencyPolicy] = {}

    @field_validator("roles", "agencies")
    @classmethod
    def _ids(cls, value: dict[str, object]) -> dict[str, object]:
        bad = [k for k in value if _ID.fullmatch(k) is None]
        if bad:
            raise ValueError(f"ids must be lowercase letters, digits, '-' or '_': {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _roles_defined_and_duties_separated(self) -> Policy:
        for agency_id, agency in self.agencies.items():
            undefined = sorted(set(agency.roles) - self.roles.keys())
            if undefined:
                raise ValueError(f"agencies.{agency_id}: undefined role(s) {', '.join(undefined)}")
            auditing = [r for r in agency.roles if AUDIT_ACTIONS & set(self.roles[r].actions)]
            if agency.video and auditing:
                # Who reviews the access to footage must not have any: an auditor never sees video.
                raise ValueError(
                    f"agencies.{agency_id}: role(s) {', '.join(auditing)} read the audit trail, "
                    "so the agency must have video = false"
                )
        return self


def load_policy(path: Path | None) -> Policy:
    """The policy in `path`; for None the empty policy, which refuses everything. ConfigError lists errors."""
    if path is None:
        return Policy()
    try:
        return Policy.model_validate(read_toml(path))
    except ValidationError as exc:
        raise ConfigError(str(path), error_lines(exc)) from None
