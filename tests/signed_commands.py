"""Commands as the collector sends them: signed with a collector test key, with a service and an expiry.

Not a test module. `signed(cmd)` is what every test that publishes a ClipRequest or ArmRequest to an agent
uses: the collector's own CommandSigner, with the fixed test key written to a private key file.
`collector_key_file(dir)` writes the public key an agent's `[commands]` trusts, and `command_policy()` is
the policy a clip service under test is built with.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from agent.command_policy import CommandPolicy
from agent.config import CommandSettings
from collector.commands.signing import CommandSigner
from common.signing import key_id, public_key_pem
from contract.messages import ArmRequest, ClipRequest, Service

C = TypeVar("C", ClipRequest, ArmRequest)

# Fixed seeds: the keys are the same in every process (a driver subprocess, a bench run).
COLLECTOR_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))


def signed(command: C, key: Ed25519PrivateKey = COLLECTOR_KEY, *, ttl_s: float = 60.0,
           service: Service = "112-video") -> C:  # fmt: skip
    """`command` with a service (unless it has one), `expires_at` = now + ttl_s, signed by `key`."""
    return _signer(_key_file(key), ttl_s).sign(
        command.model_copy(update={"service": command.service or service})
    )


def sign_as_is(command: C, key: Ed25519PrivateKey = COLLECTOR_KEY) -> C:
    """`command` signed by `key` with its fields as they are (any signature it had replaced)."""
    return _signer(_key_file(key), 0.0).seal(command)


@functools.cache
def _signer(key_file: Path, ttl_s: float) -> CommandSigner:
    return CommandSigner(key_file, ttl_s)


@functools.cache
def _key_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="cctv-test-keys-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def _key_file(key: Ed25519PrivateKey) -> Path:
    """The private key file of `key` (mode 0600, as CommandSigner expects it), written on first use."""
    path = _key_dir() / f"{key_id(key.public_key())}.key"
    if not path.exists():
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(pem)
    return path


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
