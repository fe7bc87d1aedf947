"""The district keeps control: whether this agent serves a command from the collector.

Every ClipRequest, ArmRequest and LiveRequest is checked here before anything is captured or armed: signed
(over `common.signing.signed_body`) by a trusted collector key, not expired, for this district, from an agency
and for a safety service the district serves, (clips) a window within the district's limits, and (live start
and renew) an end within `max_live_s` from now. `refusal()` is
pure: the clock is passed in. Its answer is a stable slug that the clip service reports as the `failed`
reason and counts in `cctv_agent_commands_refused_total{reason}`:

  signature_missing, unknown_key, signature_invalid   the collector did not sign it (see UNAUTHENTICATED)
  other_district      signed for another district (on the wire the codec already drops a command whose
                      district is not its topic's, counted as cctv_agent_commands_rejected_total
                      {reason="district_mismatch"}; this check guards every other way in)
  expiry_missing, command_expired, expiry_too_far      `expires_at` absent, passed, or beyond max_expiry_s
  agency_not_served, service_missing, service_not_served
  window_too_long, window_too_old, window_in_future    max_window_s, max_past_s, max_future_s
  until_passed, until_too_far                          a live session's `until`: past, or beyond max_live_s
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.config import CommandSettings
from common.settings import ConfigError
from common.signing import key_id, load_public_key, signature_problem, signed_body
from contract.messages import ArmRequest, ClipRequest, LiveRequest

log = logging.getLogger(__name__)

Command = ClipRequest | ArmRequest | LiveRequest
# Refusals of commands nobody vouched for: their request id is not remembered, so a forgery cannot take the id
# of a real request that arrives after it.
UNAUTHENTICATED = frozenset({"signature_missing", "unknown_key", "signature_invalid"})


@dataclass(frozen=True)
class CommandPolicy:
    district: str
    trusted: Mapping[str, Ed25519PublicKey] = field(repr=False)
    agencies: frozenset[str] | None  # None: every agency
    services: frozenset[str] | None  # None: every service
    max_window_s: float
    max_past_s: float
    max_future_s: float
    max_expiry_s: float
    leeway_s: float
    allow_unsigned: bool = False
    max_live_s: float = 900.0

    @classmethod
    def load(cls, settings: CommandSettings, district: str) -> CommandPolicy:
        """The policy with its keys read from disk; ConfigError naming each key file that is unusable."""
        trusted, problems = {}, []
        for path in settings.collector_public_keys:
            try:
                public_key = load_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                problems.append(f"commands.collector_public_keys: {path}: {exc}")
                continue
            trusted[key_id(public_key)] = public_key
        if problems:
            raise ConfigError("commands", problems)
        return cls(
            district=district,
            trusted=trusted,
            agencies=None if settings.agencies == "all" else frozenset(settings.agencies),
            services=None if settings.services == "all" else frozenset(settings.services),
            max_window_s=settings.max_window_s,
            max_past_s=settings.max_past_s,
            max_future_s=settings.max_future_s,
            max_expiry_s=settings.max_expiry_s,
            leeway_s=settings.clock_leeway_s,
            allow_unsigned=settings.allow_unsigned,
            max_live_s=settings.max_live_s,
        )

    def announce(self) -> None:
        """Say at start what the agent will refuse: an open door must be seen in the logs."""
        if self.allow_unsigned:
            log.warning(
                "commands.allow_unsigned is ON: unsigned commands are served. Local development only; "
                "never in a district"
            )
        elif not self.trusted:
            log.warning("no collector public key configured (commands.collector_public_keys): every command "
                        "will be refused")  # fmt: skip
        else:
            log.info("commands verified against collector keys %s", ", ".join(sorted(self.trusted)))


def refusal(command: Command, policy: CommandPolicy, now: datetime) -> str | None:
    """Why the district does not serve `command` (a slug, see the module's docstring); None if it does."""
    unsigned_ok = policy.allow_unsigned and command.signature is None
    return (
        (None if unsigned_ok else _signature(command, policy))
        or _district(command, policy)
        or _expiry(command, policy, now, required=not unsigned_ok)
        or _served(command, policy)
        or (_window(command, policy, now) if isinstance(command, ClipRequest) else None)
        or (_until(command, policy, now) if isinstance(command, LiveRequest) else None)
    )


def _signature(command: Command, policy: CommandPolicy) -> str | None:
    signature = command.signature
    if signature is None:
        return "signature_missing"
    if signature.key_id not in policy.trusted:
        return "unknown_key"
    if signature_problem(signed_body(command), signature, policy.trusted) is not None:
        return "signature_invalid"
    return None


def _district(command: Command, policy: CommandPolicy) -> str | None:
    return "other_district" if command.district != policy.district else None


def _expiry(command: Command, policy: CommandPolicy, now: datetime, *, required: bool) -> str | None:
    if command.expires_at is None:
        return "expiry_missing" if required else None
    leeway = timedelta(seconds=policy.leeway_s)
    if command.expires_at + leeway < now:
        return "command_expired"
    if command.expires_at - leeway > now + timedelta(seconds=policy.max_expiry_s):
        return "expiry_too_far"
    return None


def _served(command: Command, policy: CommandPolicy) -> str | None:
    if policy.agencies is not None and command.agency not in policy.agencies:
        return "agency_not_served"
    if policy.services is None:
        return None
    if command.service is None:
        return "service_missing"
    return "service_not_served" if command.service not in policy.services else None


def _window(request: ClipRequest, policy: CommandPolicy, now: datetime) -> str | None:
    if (request.end - request.start).total_seconds() > policy.max_window_s:
        return "window_too_long"
    if request.start < now - timedelta(seconds=policy.max_past_s):
        return "window_too_old"
    if request.start > now + timedelta(seconds=policy.max_future_s):
        return "window_in_future"
    return None


def _until(request: LiveRequest, policy: CommandPolicy, now: datetime) -> str | None:
    if request.action == "stop":
        return None
    if request.until <= now:
        return "until_passed"
    if request.until > now + timedelta(seconds=policy.max_live_s + policy.leeway_s):
        return "until_too_far"
    return None
