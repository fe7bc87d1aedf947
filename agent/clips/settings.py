"""Configuration of evidence clips: where they are spooled, how big they may be, and the S3 bucket they go to.

Units are in the names: `_s` seconds, `_bytes` bytes, `_bps` bits per second. Secrets are `SecretStr`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.s3 import S3Settings

MIB = 2**20
DAY_S = 86_400.0


class ClipBucketSettings(S3Settings):
    """The district's evidence bucket: the common S3 settings and the retention each clip is written with."""

    # Retention of each clip, manifest and thumbnail; None = no Object Lock (the bucket must have it enabled).
    object_lock_days: int | None = Field(default=None, ge=1, le=36500)
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"


class ClipSettings(BaseModel):
    """How the agent captures, spools and uploads clips."""

    model_config = ConfigDict(extra="forbid")

    spool_dir: Path = Path("/var/lib/cctv-agent/spool")
    # Above this the agent refuses new routine clips (112/119/disaster/vulnerable are still taken) and raises
    # cctv_agent_spool_full; uploaded clips are evicted first, oldest first.
    spool_max_bytes: int = Field(default=20 * 2**30, ge=MIB)
    # Space reserved for a clip before it is captured: window length times this bitrate.
    estimated_bitrate_bps: int = Field(default=8_000_000, ge=100_000)
    max_concurrent_captures: int = Field(default=4, ge=1, le=64)
    # Parts in flight at once across all uploads of the agent.
    max_concurrent_parts: int = Field(default=2, ge=1, le=32)
    # Cap for all uploads of the district together, bits per second; 0 = unlimited.
    upload_bandwidth_bps: int = Field(default=0, ge=0)
    part_size_bytes: int = Field(default=8 * MIB, ge=5 * MIB, le=512 * MIB)
    key_file: Path = Path("/var/lib/cctv-agent/manifest-signing.key")
    open_timeout_s: float = Field(default=5.0, gt=0, le=120)
    read_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # RTSP sessions open at once, one per camera stream (captures, pre-roll arms and live views share them).
    max_rtsp_sessions: int = Field(default=128, ge=1, le=4096)
    preroll_max_s: float = Field(default=120.0, ge=0, le=3600)
    preroll_max_bytes: int = Field(default=256 * MIB, ge=0)
    # Backoff of uploads while S3 is unreachable: full jitter, doubling from base up to max.
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    # While S3 refuses for a reason a person must fix (access denied, no such bucket, bad key or signature),
    # one spooled clip is tried this often, to notice the fix (cctv_agent_clip_uploads_blocked).
    blocked_retry_s: float = Field(default=60.0, gt=0)
    # A published result not acknowledged by the broker within this time is sent again.
    republish_after_s: float = Field(default=60.0, gt=0)
    # What a failed clip left in the spool (job file, any partial video) is kept this long for a person to
    # look at, counted from when it failed, then deleted. Uploaded clips follow the space policy instead;
    # clips not yet uploaded are never deleted.
    failed_retention_s: float = Field(default=7 * DAY_S, gt=0)
    # Request ids remembered to recognise a duplicate delivery. QoS 1 redelivers within minutes; a copy of a
    # command older than this is not expected and would make a second clip.
    seen_ids_retention_s: float = Field(default=30 * DAY_S, gt=0)
    # On stop (SIGTERM), running captures get this long to finish; then they are cut, and their partial clips
    # stay in the spool to be delivered on the next start. The service manager's stop timeout must exceed it.
    shutdown_grace_s: float = Field(default=30.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _retry_order(self) -> ClipSettings:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must be >= retry_base_s")
        return self
