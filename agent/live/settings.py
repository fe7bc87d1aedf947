"""Configuration of live views (`[live]`). Units are in the names: `_s` seconds, `_bytes` bytes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

MIB = 2**20


class LiveSettings(BaseModel):
    """How the agent serves live views of its cameras (agent/live/, docs/agent.md "Live view")."""

    model_config = ConfigDict(extra="forbid")

    # Live sessions at once; a start beyond it is refused with `too_many_sessions`.
    max_sessions: int = Field(default=64, ge=1, le=1000)
    # A segment ends at the first keyframe at least this long after its start (one GOP from most cameras).
    min_segment_s: float = Field(default=1.0, gt=0, le=10)
    # Keyframes further apart than this (or none at all) fail the session with `no_keyframe`.
    max_segment_s: float = Field(default=10.0, gt=0, le=60)
    # Per session: segments waiting for S3 (uplink outage) beyond this are dropped, oldest first, and counted.
    queue_max_bytes: int = Field(default=16 * MIB, ge=MIB)
    # A camera whose stream stays lost (or never opens) this long fails the session with `camera_lost`.
    camera_lost_s: float = Field(default=30.0, gt=0, le=600)
    # The camera's main-stream pre-roll is kept armed while a session runs and this long after it ends, so
    # that a "save this range" clip request is served from it (clips.preroll_max_s bounds how far back).
    # It costs a main-stream connection per sub-stream view and up to clips.preroll_max_bytes of memory each.
    arm_preroll: bool = True
    save_grace_s: float = Field(default=60.0, ge=0, le=3600)
    # Live segment uploads in flight at once (their own lane: never behind a clip's part).
    max_parallel_uploads: int = Field(default=4, ge=1, le=64)

    @model_validator(mode="after")
    def _segment_order(self) -> LiveSettings:
        if self.max_segment_s < self.min_segment_s:
            raise ValueError("max_segment_s must be >= min_segment_s")
        return self
