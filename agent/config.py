"""Agent settings: a TOML file (deploy/agent.example.toml) overridden by AGENT__* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from agent.clips.settings import ClipBucketSettings, ClipSettings
from agent.live.settings import LiveSettings
from common.mqtt_settings import MqttSettings
from common.settings import TomlThenEnv
from contract.districts import DISTRICTS
from contract.messages import Service
from contract.topics import ID_PATTERN


class OnvifSettings(BaseModel):
    """How hard the agent may push the district's cameras."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=5.0, gt=0, le=120)
    # 300 cameras in flight, one call each: measured fastest for 2,700 cameras at 50 ms (bench.discovery);
    # the agent is CPU-bound there, so a second connection per camera costs more than it saves.
    concurrency: int = Field(default=300, ge=1, le=1000)
    per_camera: int = Field(default=1, ge=1, le=8)
    retry_base_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _retry_order(self) -> OnvifSettings:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must not be smaller than retry_base_s")
        return self


class DiscoverySettings(BaseModel):
    """WS-Discovery: multicast on these interfaces (by address) plus unicast probes over these hosts/CIDRs."""

    model_config = ConfigDict(extra="forbid")

    targets: list[str] = Field(default_factory=list)
    multicast_interfaces: list[str] = Field(default_factory=list)
    port: int = Field(default=3702, ge=1, le=65535)
    window_s: float = Field(default=3.0, gt=0, le=60)
    rate_per_s: int = Field(default=20_000, ge=1)

    @property
    def enabled(self) -> bool:
        return bool(self.targets or self.multicast_interfaces)

    @field_validator("targets")
    @classmethod
    def _valid_targets(cls, targets: list[str]) -> list[str]:
        from agent.wsdiscovery import expand_targets

        expand_targets(targets)  # IPv4 hosts or CIDRs, at most MAX_TARGETS hosts: ValueError otherwise
        return targets


class HealthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    liveness_interval_s: float = Field(default=30.0, gt=0)
    stream_interval_s: float = Field(default=300.0, gt=0)
    stream_concurrency: int = Field(default=16, ge=1, le=256)
    stream_open_s: float = Field(default=3.0, gt=0)
    stream_read_s: float = Field(default=3.0, gt=0)
    stream_total_s: float = Field(default=8.0, gt=0)
    snapshot_interval_s: float = Field(default=60.0, gt=0)
    sweep_interval_s: float = Field(default=3600.0, gt=0)
    clock_skew_limit_s: float = Field(default=5.0, gt=0)


class CommandSettings(BaseModel):
    """The district's own policy on commands from the collector (agent/command_policy.py applies it)."""

    model_config = ConfigDict(extra="forbid")

    # PEM public keys (Ed25519) of the collector; a command must be signed by one of them.
    collector_public_keys: list[Path] = Field(default_factory=list, max_length=16)
    # Which agencies and safety services the district serves; "all" = any.
    agencies: list[str] | Literal["all"] = "all"
    services: list[Service] | Literal["all"] = "all"
    # Longest window a clip request may ask for; how far back its start may lie; how far ahead.
    max_window_s: float = Field(default=600.0, gt=0, le=3 * 3600)
    max_past_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    max_future_s: float = Field(default=300.0, gt=0, le=24 * 3600)
    # A command valid for longer than this from now is refused: a replay outlives neither its expiry nor,
    # with this bound, the agent's memory of request ids (clips.seen_ids_retention_s).
    max_expiry_s: float = Field(default=86_400.0, gt=0, le=7 * 86_400)
    # Tolerated difference between the collector's clock and the agent's, for `expires_at`.
    clock_leeway_s: float = Field(default=30.0, ge=0, le=300)
    # Longest a live view may run before the collector must renew it (LiveRequest `until`).
    max_live_s: float = Field(default=900.0, gt=0, le=24 * 3600)
    # Local development only: unsigned commands are served (signed ones are still verified). Logged loudly.
    allow_unsigned: bool = False


class AgentSettings(TomlThenEnv):
    model_config = SettingsConfigDict(env_prefix="AGENT__", env_nested_delimiter="__", extra="forbid")

    district: str
    agent_id: str = Field(pattern=ID_PATTERN)
    ledger: Path
    secrets_file: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mqtt: MqttSettings = MqttSettings()
    onvif: OnvifSettings = OnvifSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    health: HealthSettings = HealthSettings()
    s3: ClipBucketSettings = ClipBucketSettings()
    clips: ClipSettings = ClipSettings()
    live: LiveSettings = LiveSettings()
    commands: CommandSettings = CommandSettings()
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    # Loopback by default; a container sets 0.0.0.0 so that Prometheus can scrape it (Dockerfile.agent).
    metrics_host: str = "127.0.0.1"

    @field_validator("district")
    @classmethod
    def _known_district(cls, value: str) -> str:
        if value not in DISTRICTS:
            raise ValueError(f"unknown district slug {value!r}; one of: {', '.join(sorted(DISTRICTS))}")
        return value

    @model_validator(mode="after")
    def _replays_remembered(self) -> AgentSettings:
        if self.commands.max_expiry_s >= self.clips.seen_ids_retention_s:
            raise ValueError("commands.max_expiry_s must be shorter than clips.seen_ids_retention_s")
        return self
