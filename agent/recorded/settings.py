"""Configuration of recorded footage (`[recorded]`): where the district's recorders are listed and how long
the agent waits for them. Units are in the names (`_s` seconds)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class RecordedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The recorders ledger (CSV, the camera ledger's columns: camera_id is the recorder's id); a camera's
    # ledger row names its recorder in the `recorder` column. None: only cameras' own storage is used.
    recorders: Path | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=120)  # each Search/Replay SOAP call
    open_timeout_s: float = Field(default=5.0, gt=0, le=120)  # connecting to the replay
    read_timeout_s: float = Field(default=5.0, gt=0, le=120)  # a replay silent this long has stalled
    # How often each camera's recordings are checked for the health report (reachable, retention seen).
    reach_interval_s: float = Field(default=600.0, gt=0)
    reach_concurrency: int = Field(default=8, ge=1, le=64)
