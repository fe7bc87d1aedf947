"""Commands as the collector sends them: signed with a collector test key, with a service and an expiry.

Not a test module. `signed(cmd)` is what every test that publishes a ClipRequest or ArmRequest to an agent
uses; `collector_key_file(dir)` writes the public key an agent's `[commands]` trusts, and `command_policy()`
is the policy a clip service under test is built with.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.command_policy import CommandPolicy
from agent.config import CommandSettings
from common.signing import public_key_pem, sign, signed_body
from contract.messages import ArmRequest, ClipRequest, Service

C = TypeVar("C", ClipRequest, ArmRequest)

# Fixed seeds: the keys are the same in every process (a driver subprocess, a bench run).
COLLECTOR_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))


def signed(command: C, key: Ed25519PrivateKey = COLLECTOR_KEY, *, ttl_s: float = 60.0,
           service: Service = "112-video") -> C:  # fmt: skip
    """`command` with a service (unless it has one), `expires_at` = now + ttl_s, signed by `key`."""
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    return sign_as_is(
        command.model_copy(update={"service": command.service or service, "expires_at": expires_at}), key
    )


def sign_as_is(command: C, key: Ed25519PrivateKey = COLLECTOR_KEY) -> C:
    """`command` signed by `key` with its fields as they are (any signature it had replaced)."""
    unsigned = command.model_copy(update={"signature": None})
    return unsigned.model_copy(update={"signature": sign(signed_body(unsigned), key)})


def collector_key_file(directory: Path, key: Ed25519PrivateKey = COLLECTOR_KEY) -> Path:
    """The PEM public key of `key`, written in `directory`, for `commands.collector_public_keys`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "collector-public.pem"
    path.write_bytes(public_key_pem(key))
    return path


def command_settings(directory: Path, **overrides: object) -> CommandSettings:
    """`[commands]` trusting the collector test key."""
    return CommandSettings.model_validate(
        {"collector_public_keys": [collector_key_file(directory)], **overrides}
    )


def command_policy(directory: Path, district: str = "gangnam", **overrides: object) -> CommandPolicy:
    return CommandPolicy.load(command_settings(directory, **overrides), district)
