"""The one form of an Ed25519 signature in the contract: on evidence manifests and on commands to agents."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ALG: Literal["ed25519"] = "ed25519"


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alg: Literal["ed25519"]
    key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description="first 16 hex of SHA-256 of the key")]
    value: Annotated[str, Field(min_length=1, max_length=200, description="base64 of the signature")]
