"""The agent's view of its fleet: per camera the ledger entry, what enumeration found, its observed health,
and the contract messages that describe it (which carry no address and no credential)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.firmware import FirmwareProfile, Quirks
from agent.ledger import LedgerCamera
from agent.onvif_reader import CameraInfo, StreamInfo
from agent.onvif_soap import Learned
from agent.status import Observation, evaluate
from contract.messages import (
    INT32_MAX,
    CameraMeta,
    CameraState,
    CameraStatus,
    HealthEntry,
    HealthSnapshot,
    RecordedReach,
    StreamSummary,
)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CameraRecord:
    ledger: LedgerCamera
    info: CameraInfo | None = None
    observation: Observation = field(default_factory=Observation)
    endpoint: str | None = None  # WS-Discovery endpoint urn, once seen
    firmware_profile: FirmwareProfile | None = None  # whose quirks apply
    published_meta: str | None = None  # the meta last published, without its timestamp
    state: CameraState = "unknown"
    reasons: list[str] = field(default_factory=list)
    last_error: str | None = None
    since: datetime = field(default_factory=now)
    checked_at: datetime = field(default_factory=now)
    learned: Learned = field(default_factory=Learned)  # how to talk to it, found out by enumeration
    recorded: RecordedReach | None = None  # its recorded footage, as last checked (agent/recorded/source.py)

    @property
    def camera_id(self) -> str:
        return self.ledger.camera_id

    @property
    def quirks(self) -> Quirks | None:
        """The matched firmware profile's quirks, once a profile is known."""
        return self.firmware_profile.quirks if self.firmware_profile else None

    def reevaluate(self, clock_skew_limit_s: float) -> bool:
        """Recompute state from the observation; True if state or reasons changed."""
        state, reasons, last_error = evaluate(self.observation, clock_skew_limit_s)
        self.checked_at = now()
        self.last_error = last_error
        if (state, reasons) == (self.state, self.reasons):
            return False
        self.state, self.reasons, self.since = state, reasons, self.checked_at
        return True


class Registry:
    def __init__(self, district: str, agent_id: str, cameras: list[LedgerCamera]) -> None:
        self.district = district
        self.agent_id = agent_id
        self.records = {camera.camera_id: CameraRecord(camera) for camera in cameras}

    def __len__(self) -> int:
        return len(self.records)

    def counts_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records.values():
            counts[record.state] = counts.get(record.state, 0) + 1
        return counts

    def meta(self, record: CameraRecord) -> CameraMeta | None:
        info = record.info
        if info is None:
            return None
        kind, identity = info.identity
        ledger = record.ledger
        return CameraMeta(
            district=self.district,
            camera_id=record.camera_id,
            agent_id=self.agent_id,
            name=_text(ledger.name),
            address_text=_text(ledger.address_text),
            lat=ledger.lat,
            lon=ledger.lon,
            manufacturer=_text(info.manufacturer),
            model=_text(info.model),
            firmware=_text(info.firmware),
            serial=_text(info.serial),
            identity=identity or record.camera_id,
            identity_kind=kind,
            firmware_profile=record.firmware_profile.name if record.firmware_profile else None,
            firmware_below_minimum=record.observation.firmware_below_minimum,
            streams=[_summary(stream) for stream in info.streams[:MAX_STREAMS]],
            updated_at=now(),
        )

    def status(self, record: CameraRecord) -> CameraStatus:
        return CameraStatus(
            district=self.district,
            camera_id=record.camera_id,
            agent_id=self.agent_id,
            state=record.state,
            reasons=record.reasons,
            last_error=record.last_error,
            clock_offset_s=record.observation.clock_offset_s,
            since=record.since,
            checked_at=record.checked_at,
        )

    def snapshot(self) -> HealthSnapshot:
        entries = [
            HealthEntry(
                camera_id=r.camera_id,
                state=r.state,
                reasons=r.reasons,
                clock_offset_s=r.observation.clock_offset_s,
                checked_at=r.checked_at,
                recorded=r.recorded,
            )
            for r in self.records.values()
        ]
        return HealthSnapshot(district=self.district, agent_id=self.agent_id, taken_at=now(), cameras=entries)


MAX_TEXT, MAX_TOKEN, MAX_STREAMS, MAX_SIDE = 500, 64, 16, 16384


def _text(value: str, limit: int = MAX_TEXT) -> str:
    """Camera-provided text, cut to what the contract carries (a camera may send anything, even NUL)."""
    return value.replace("\x00", "")[:limit]


def _summary(stream: StreamInfo) -> StreamSummary:
    """A profile within the contract's bounds, whatever the camera claimed. A frame rate that is not a finite
    number (NaN, inf) is unknown: 0, as when the camera states none."""
    fps = stream.fps if math.isfinite(stream.fps) else 0.0
    return StreamSummary(
        token=_text(stream.token, MAX_TOKEN),
        codec=stream.codec if stream.codec in ("h264", "h265", "mjpeg") else "other",
        width=min(max(stream.width, 0), MAX_SIDE),
        height=min(max(stream.height, 0), MAX_SIDE),
        fps=min(max(fps, 0.0), 1000.0),
        bitrate_kbps=min(stream.bitrate_kbps, INT32_MAX)
        if stream.bitrate_kbps is not None and stream.bitrate_kbps >= 0
        else None,
    )
