"""The collector's signature on every command it sends to a district agent.

A command carries `expires_at` (now + `commands.ttl_s`) and an Ed25519 `signature` over its canonical JSON
without the signature (common/signing.py `signed_body`). The agent checks both against the collector public
keys its district configured, and captures nothing otherwise. The key is created on first start
(`commands.key_file`, mode 0600); `cctv-collector commands public-key` prints the public half to hand over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar, cast

from common.signing import key_id, load_or_create_key, public_key_pem, sign, signed_body
from contract.messages import ArmRequest, ClipRequest, LiveRequest

Command = ClipRequest | ArmRequest | LiveRequest
C = TypeVar("C", bound=ClipRequest | ArmRequest | LiveRequest)


class CommandSigner:
    """Signs commands with the collector's key; `clock` (epoch seconds) is injectable for tests."""

    def __init__(self, key_path: Path, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._key = load_or_create_key(key_path)
        self.ttl_s = ttl_s
        self._clock = clock
        self.key_id = key_id(self._key.public_key())

    def sign(self, command: C) -> C:
        """`command` with `expires_at` = now + ttl and the signature over everything else."""
        expires_at = datetime.fromtimestamp(self._clock() + self.ttl_s, UTC)
        return self.seal(cast(C, command.model_copy(update={"expires_at": expires_at})))

    def seal(self, command: C) -> C:
        """`command` signed with its fields as they are (any signature it had replaced)."""
        unsigned = command.model_copy(update={"signature": None})
        signed = unsigned.model_copy(update={"signature": sign(signed_body(unsigned), self._key)})
        return cast(C, signed)  # model_copy keeps the type; mypy loses it through the bound (here and above)

    def public_pem(self) -> bytes:
        """The public key, as districts configure it in their agents."""
        return public_key_pem(self._key)
