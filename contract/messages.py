"""Versioned messages of the wire contract (JSON over MQTT).

Every message carries `v` (the contract version) and the `district` it belongs to; the district must match the
topic's. Unknown fields are rejected: a change of fields is a new version. Camera IP addresses, ports and
credentials have no field here on purpose: they never leave the district agent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from common.jsonlog import redact
from contract.signature import Signature
from contract.topics import DISTRICT_PATTERN, ID_PATTERN

VERSION: Literal[1] = 1
SUPPORTED_VERSIONS: frozenset[int] = frozenset({VERSION})

DistrictSlug = Annotated[str, Field(pattern=DISTRICT_PATTERN, description="ASCII district slug: gangnam")]
Ident = Annotated[str, Field(pattern=ID_PATTERN, description="topic-safe id: letters, digits, . _ : -")]
# Every value must fit the index's columns, or one message would fail the writer's whole batch: text without
# NUL (PostgreSQL's text cannot hold it), integers within a signed 32-bit column (counts) or 64-bit (sizes),
# floats finite.
_NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Field(max_length=500, pattern=_NO_NUL)]
# Free text that may quote a camera's error: addresses and credentials are stripped on the way in.
ErrorText = Annotated[str, Field(max_length=500, pattern=_NO_NUL), AfterValidator(redact)]
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Reason = Annotated[str, Field(pattern=r"^[a-z0-9_:.-]{1,64}$")]
Timestamp = AwareDatetime

CameraState = Literal["online", "degraded", "offline", "unauthorized", "unknown"]
AgentPresence = Literal["online", "offline"]
# Who asks, in the order they are served: 112 police before 119 fire before disaster rooms before
# searches for vulnerable people before routine work.
Priority = Literal["112", "119", "disaster", "vulnerable", "routine"]
PRIORITY_RANK: dict[Priority, int] = {"112": 0, "119": 1, "disaster": 2, "vulnerable": 3, "routine": 4}
# The five safety services of the national smart city platform; an incident names one.
Service = Literal["112-video", "112-dispatch", "119-dispatch", "disaster", "vulnerable"]
SERVICE_PRIORITY: dict[Service, Priority] = {
    "112-video": "112",
    "112-dispatch": "112",
    "119-dispatch": "119",
    "disaster": "disaster",
    "vulnerable": "vulnerable",
}
# Where a clip's footage came from: the live stream, the agent's pre-roll buffer, or recorded storage.
ClipSource = Literal["live", "preroll", "recording"]


class Message(BaseModel):
    """Fields every message has."""

    # NaN and Infinity are not JSON: no float field takes them (nor a number too large for a float).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = VERSION
    district: DistrictSlug

    @field_validator("v", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        if type(value) is not int:  # Literal[1] alone takes true and 1.0
            raise ValueError("v must be an integer")
        return value


class AgentState(Message):
    """Retained presence of a district agent; its MQTT last will is the same message with state=offline.

    Presence is ordered by `session`, not by time: the will is fixed when a connection begins, so a will and
    the `online` of one connection carry the same session, and every later connection has a greater one.
    """

    agent_id: Ident
    state: AgentPresence
    session: int = Field(
        ge=0,
        le=2**63 - 1,
        description="grows with every connection of the agent (milliseconds since the epoch when it began); "
        "a greater session wins, and in the same session `offline` wins over `online`",
    )
    district_name: Text = ""
    version: Text = ""
    started_at: Timestamp | None = None
    cameras: Count = 0
    # In a last will: when its connection began (the broker sends the will later, unchanged).
    sent_at: Timestamp


class StreamSummary(BaseModel):
    """One media profile of a camera, without its URI."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    token: Annotated[str, Field(max_length=64, pattern=_NO_NUL)]
    codec: Literal["h264", "h265", "mjpeg", "other"]
    width: int = Field(ge=0, le=16384)
    height: int = Field(ge=0, le=16384)
    fps: float = Field(ge=0, le=1000)
    bitrate_kbps: Count | None = None


class CameraMeta(Message):
    """What a camera is and where it stands; retained, published when it changes."""

    camera_id: Ident
    agent_id: Ident
    name: Text = ""
    address_text: Text = ""
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    manufacturer: Text = ""
    model: Text = ""
    firmware: Text = ""
    serial: Text = ""
    # Stable hardware identity: a hash of the MAC, else of the serial, else the ledger id; never the IP.
    identity: Text
    identity_kind: Literal["mac", "serial", "ledger"]
    firmware_profile: Text | None = None
    firmware_below_minimum: bool | None = None
    streams: list[StreamSummary] = Field(default_factory=list, max_length=16)
    updated_at: Timestamp


class CameraStatus(Message):
    """A camera's health state; retained, published when state or reasons change."""

    camera_id: Ident
    agent_id: Ident
    state: CameraState
    reasons: list[Reason] = Field(default_factory=list, max_length=16)
    last_error: ErrorText | None = None
    clock_offset_s: Finite | None = None
    since: Timestamp
    checked_at: Timestamp


class RecordedReach(BaseModel):
    """Whether a camera's recorded footage can be reached and how far back it goes, as last checked: `via`
    the camera's own storage or a recorder (ONVIF Profile G); `earliest`/`latest` recorded moments (the
    retention seen); `reason` why it is not reachable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reachable: bool
    via: Literal["camera", "recorder"]
    earliest: Timestamp | None = None
    latest: Timestamp | None = None
    reason: ErrorText | None = None
    checked_at: Timestamp | None = None


class HealthEntry(BaseModel):
    """One camera's line in a health snapshot. `recorded`: absent for a camera without recorded storage."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    camera_id: Ident
    state: CameraState
    reasons: list[Reason] = Field(default_factory=list, max_length=16)
    clock_offset_s: Finite | None = None
    checked_at: Timestamp | None = None
    recorded: RecordedReach | None = None


class HealthSnapshot(Message):
    """Every camera of a district at one moment; periodic, not retained."""

    agent_id: Ident
    taken_at: Timestamp
    cameras: list[HealthEntry] = Field(max_length=20000)


class SignedCommand(Message):
    """What every collector -> agent command carries: who asks, for which incident, and the signature."""

    agency: Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_NUL)]
    incident: Annotated[str, Field(max_length=64, pattern=_NO_NUL)] = ""
    priority: Priority = "routine"
    sent_at: Timestamp
    # Set by the collector on every command it signs; the agent checks them against its district policy.
    service: Service | None = None
    expires_at: Timestamp | None = None
    signature: Signature | None = None


class ClipRequest(SignedCommand):
    """Collector -> agent: cut this window of this camera (QoS 1; the request id makes retries idempotent)."""

    request_id: Ident
    camera_id: Ident
    start: Timestamp
    end: Timestamp
    purpose: Text
    requested_by: Annotated[str, Field(max_length=128, pattern=_NO_NUL)] = ""

    @model_validator(mode="after")
    def _window_order(self) -> ClipRequest:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class ArmRequest(SignedCommand):
    """Collector -> agent: keep a pre-roll buffer of this camera for a while (cameras near an incident)."""

    request_id: Ident
    camera_id: Ident
    duration_s: float = Field(gt=0, le=24 * 3600)


ClipStatusName = Literal["accepted", "capturing", "uploading", "succeeded", "failed"]


class ClipUpdate(Message):
    """Agent -> collector: progress and final result of a clip request (QoS 1, upserted by request id)."""

    request_id: Ident
    camera_id: Ident
    agent_id: Ident
    status: ClipStatusName
    reason: ErrorText | None = None
    object_key: Text | None = None
    thumbnail_key: Text | None = None
    manifest_key: Text | None = None
    size_bytes: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    covered_start: Timestamp | None = None
    covered_end: Timestamp | None = None
    source: ClipSource | None = None
    sent_at: Timestamp


LiveAction = Literal["start", "renew", "stop"]
LiveStream = Literal["sub", "main"]


class LiveRequest(SignedCommand):
    """Collector -> agent: start, renew or stop a live session of one camera (QoS 1, signed like a clip).

    A session ends on its own at `until` unless a renewal moves it; the agent never streams past it.
    """

    session_id: Ident
    action: LiveAction
    camera_id: Ident
    stream: LiveStream = "sub"
    until: Timestamp
    purpose: Text
    requested_by: Annotated[str, Field(max_length=128, pattern=_NO_NUL)] = ""


class LiveSegmentInfo(BaseModel):
    """One uploaded segment of a live session: one GOP, an immutable object, announced once it is complete."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    sequence: Annotated[int, Field(ge=0, le=INT32_MAX)]
    object_key: Text
    init_key: Text = Field(description="the init segment (HLS EXT-X-MAP) this segment needs")
    started_at: Timestamp = Field(description="wall-clock capture time of the segment's first frame")
    duration_s: float = Field(gt=0, le=60)
    size_bytes: Annotated[int, Field(ge=0, le=INT64_MAX)]
    discontinuity: bool = Field(default=False, description="first segment after a gap or a new init segment")


LiveStatusName = Literal["started", "segment", "stopped", "failed", "refused"]


class LiveUpdate(Message):
    """Agent -> collector: a live session's state, and each segment as soon as it is uploaded (QoS 1)."""

    session_id: Ident
    camera_id: Ident
    agent_id: Ident
    status: LiveStatusName
    reason: ErrorText | None = None
    segment: LiveSegmentInfo | None = None
    sent_at: Timestamp

    @model_validator(mode="after")
    def _segment_iff_status(self) -> LiveUpdate:
        if (self.status == "segment") != (self.segment is not None):
            raise ValueError("segment is present exactly when status is 'segment'")
        return self


AnyMessage = (
    AgentState
    | CameraMeta
    | CameraStatus
    | HealthSnapshot
    | ClipRequest
    | ArmRequest
    | ClipUpdate
    | LiveRequest
    | LiveUpdate
)
