"""The evidence manifest: one schema that the agent writes (signed, next to each clip in S3) and the collector
reads (`cctv-collector reconcile`). JSON Schema: docs/contract/manifest.json.

A manifest says what a clip is, who asked for it and why. The camera's network address and credentials have
no field here on purpose: they never leave the district. Unknown fields are rejected, as in the messages: a
change of fields is a change of this model (the covered window may gain fields, e.g. the time source and its
uncertainty), and a change that old readers cannot accept is a new `v`.

Canonical form and signing: common/signing.py; the signature covers the canonical JSON of this model's dump
without `signature` (agent/clips/manifest.py).
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from contract.errors import ContractError
from contract.messages import ClipSource, DistrictSlug, Ident, Text
from contract.signature import Signature

MANIFEST_VERSION: Literal[1] = 1
MANIFEST_SUFFIX = ".manifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024

# Times are written in UTC ("...Z") whatever zone they were given in, so one instant has one spelling.
UtcTime = Annotated[AwareDatetime, AfterValidator(lambda t: t.astimezone(UTC))]
ObjectRole = Literal["clip", "thumbnail", "manifest"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestCamera(_Part):
    """The camera as the district knows it: identity and make, never its address."""

    id: Ident
    manufacturer: Text = ""
    model: Text = ""
    firmware: Text = ""


class Requested(_Part):
    start: UtcTime
    end: UtcTime


class Gap(_Part):
    """A stretch inside the covered window that the clip does not hold (nothing was recorded then)."""

    start: UtcTime
    end: UtcTime


class Covered(_Part):
    """What the clip actually holds; `complete` when it holds the whole requested window. `time_source` says
    which clock the times come from: `rtcp` (the camera's, which agrees with ours), `rtcp_corrected` (the
    camera's minus its measured ONVIF offset), `local` (when the agent received the frames) or `recording`
    (the recorded time the recorder stamped on each frame, see `Manifest.recording`); `uncertainty_s` how far
    they can be from the agent's clock (null: unknown). `gaps`: parts of [start, end] missing from the clip
    (a camera that was down), in order; absent when there are none."""

    start: UtcTime | None
    end: UtcTime | None
    complete: bool
    time_source: Literal["rtcp", "rtcp_corrected", "local", "recording"]
    uncertainty_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    gaps: list[Gap] | None = Field(default=None, max_length=1000)

    @model_serializer(mode="wrap")
    def _without_absent_gaps(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return _drop_absent(handler(self), ("gaps",))


class Recording(_Part):
    """Where a recorded clip came from: the recording's token on the device that replayed it, the device
    (`camera` for the camera's own storage, else the recorder's id in the district ledger), the source
    (the Profile G implementation, or a vendor adapter's name) and its time base (`recorder_ntp`: the
    recorded time the device stamped on each frame, on its clock, whose offset from ours is
    `clock_offset_s` when known)."""

    token: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00]*$")]
    device: Ident
    source: Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9_.-]+$")] = "onvif-profile-g"
    time_base: Literal["recorder_ntp"] = "recorder_ntp"
    clock_offset_s: float | None = Field(default=None, allow_inf_nan=False)


class Digest(_Part):
    sha256: Sha256
    size_bytes: int = Field(ge=0)


class Manifest(_Part):
    """A clip's signed manifest. `objects` holds the S3 keys by role (clip and manifest always)."""

    v: Literal[1]
    camera: ManifestCamera
    district: DistrictSlug
    request_id: Ident
    agency: Annotated[str, Field(max_length=64)]
    incident: Annotated[str, Field(max_length=64)] = ""
    purpose: Text = ""
    requested: Requested
    covered: Covered
    clock_offset_s: float | None = None
    agent_id: Ident
    software_version: Text = ""
    objects: dict[ObjectRole, Annotated[str, Field(min_length=1, max_length=1024)]]
    clip: Digest
    thumbnail: Digest | None = None
    created_at: UtcTime
    # Added after v1 was first written: absent (not null) when not set, so manifests written before them
    # keep the bytes their signature covers.
    source: ClipSource | None = None
    recording: Recording | None = None
    signature: Signature | None = None

    @model_serializer(mode="wrap")
    def _without_absent_additions(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return _drop_absent(handler(self), ("source", "recording"))

    @field_validator("objects")
    @classmethod
    def _clip_and_manifest_keys(cls, objects: dict[ObjectRole, str]) -> dict[ObjectRole, str]:
        if "clip" not in objects or "manifest" not in objects:
            raise ValueError("objects must name the clip and the manifest")
        return objects


def _drop_absent(dumped: dict[str, object], optional: tuple[str, ...]) -> dict[str, object]:
    """The dump without those of `optional` that are None: fields added later are absent, not null."""
    return {k: v for k, v in dumped.items() if k not in optional or v is not None}


def parse_manifest(body: bytes) -> Manifest:
    """A manifest from its stored bytes; ContractError with the reason when it is not a valid one."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise ContractError("oversized", f"{len(body)} bytes > {MAX_MANIFEST_BYTES}")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to parse
        raise ContractError("invalid_json", type(exc).__name__) from None
    if not isinstance(document, dict):
        raise ContractError("invalid_json", "not a JSON object")
    version = document.get("v")
    if type(version) is not int or version != MANIFEST_VERSION:
        raise ContractError("unknown_version", f"v={str(version)[:20]}")
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        raise ContractError("invalid_payload", first_error(exc)) from None


def first_error(exc: ValidationError) -> str:
    """The first problem of a validation error as `field.path: message`."""
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"[:300]
