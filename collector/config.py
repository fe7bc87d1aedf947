"""Collector settings: a TOML file (deploy/collector.example.toml) overridden by COLLECTOR__* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from collector.access.settings import AccessSettings
from collector.index.store_sqlite import sqlite_path
from common.mqtt_settings import MqttSettings
from common.s3 import S3Settings
from common.settings import TomlThenEnv


class StoreSettings(BaseModel):
    """Where the index lives: `sqlite:///path/to.db` (default) or `postgresql://user@host/db`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default="sqlite:///var/lib/cctv-collector/index.db", pattern=r"^(sqlite|postgresql)://")


class IngestSettings(BaseModel):
    """Batching between the MQTT thread and the writer; shared subscription group for scale-out."""

    model_config = ConfigDict(extra="forbid")

    share_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    batch_max: int = Field(default=1000, ge=1, le=100_000)
    batch_ms: int = Field(default=50, ge=1, le=10_000)
    queue_max: int = Field(default=100_000, ge=100)
    # QoS 1 messages the broker may send ahead of their acknowledgement, which follows their commit (MQTT 5
    # Receive Maximum): they wait in memory meanwhile. At most 65,535: message ids are 16-bit.
    receive_maximum: int = Field(default=20_000, ge=1, le=65_535)
    session_expiry_s: int = Field(default=3600, ge=0)
    # With share_group: fetch retained meta/status once through a non-shared subscription (MQTT 5 brokers do
    # not send retained messages to shared subscriptions; Mosquitto 2.0 does, making this a harmless repeat).
    bootstrap_retained: bool = True
    # Accept camera, health and clip messages only from the agent that announced itself for the district.
    require_known_agent: bool = True
    reject_log_interval_s: float = Field(default=60.0, ge=0)
    # Messages the index refused, kept in its dead_letters table (the oldest beyond this are deleted).
    dead_letters_keep: int = Field(default=1000, ge=1)
    # /healthz fails when messages wait and nothing was committed for this long.
    stall_after_s: float = Field(default=30.0, gt=0)
    # On SIGTERM, how long the writer may take to commit what is queued before it is killed.
    stop_grace_s: float = Field(default=30.0, gt=0)


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Requests handled at once in worker threads (the handlers and their store calls are blocking). A few
    # threads keep the GIL and the audit chain's head lock uncontended; more only queue inside the process
    # (bench.platform at 50 clients: 4 threads ~0.8 s p99, 8 threads ~1.3 s, and more CPU per request).
    api_threads: int = Field(default=4, ge=1, le=256)


class PlatformSettings(BaseModel):
    """The platform API's own settings (access, audit and commands have their own sections)."""

    model_config = ConfigDict(extra="forbid")

    # `<district>.pem`: each district agent's manifest public key, to verify the clips it delivers.
    agent_keys_dir: Path | None = None
    # Lifetime of a presigned playback or thumbnail URL; each one issued is an audited access.
    url_expiry_s: int = Field(default=300, ge=10, le=3600)
    # How often the nearest-camera index checks the cameras table for changes.
    nearest_refresh_s: float = Field(default=5.0, gt=0, le=3600)
    # Cameras listed near an incident when the request does not say (and at most).
    nearby_default: int = Field(default=50, ge=1, le=1000)
    nearby_max: int = Field(default=500, ge=1, le=10_000)


class LiveSettings(BaseModel):
    """Live view (collector/live/): playlists, when a session ends on its own, how long segments are kept."""

    model_config = ConfigDict(extra="forbid")

    # Segments in a playlist's sliding window (hls.js starts 3 target durations behind the newest: keep more).
    playlist_segments: int = Field(default=6, ge=3, le=100)
    # Lifetime of the presigned init and segment URLs in a playlist (a player fetches them within seconds).
    url_expiry_s: int = Field(default=60, ge=10, le=3600)
    # Playlist fetches per session and minute (instead of the account's rate: a player reloads every
    # segment, and twice as often while it waits for one).
    playlist_per_min: int = Field(default=240, ge=1, le=100_000)
    # A session nobody fetched the playlist of for this long is stopped.
    idle_stop_s: float = Field(default=60.0, gt=0, le=3600)
    # How often the reaper looks for sessions to stop (idle, past `until`, incident closed, grant ended).
    reaper_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Live segment objects and rows are deleted this long after they were listed (a saved range is a clip).
    retention_s: float = Field(default=3600.0, gt=0, le=30 * 86400)
    janitor_interval_s: float = Field(default=60.0, gt=0, le=86400)
    # The MQTT session of the follower of live updates (QoS 1 updates wait at the broker while it is away).
    session_expiry_s: int = Field(default=300, ge=0)


class CommandSettings(BaseModel):
    """Commands to agents (collector/commands/): the signing key and the outbox's publishing cadence."""

    model_config = ConfigDict(extra="forbid")

    # The collector's Ed25519 key (PKCS#8 PEM), created on first start; districts trust its public key
    # (`cctv-collector commands public-key`). Default: commands.key beside a SQLite index, else in
    # /var/lib/cctv-collector.
    key_file: Path | None = None
    # A command's lifetime: agents refuse it after `expires_at`, the outbox stops publishing it then.
    ttl_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    # An unanswered command is published again this often.
    republish_interval_s: float = Field(default=5.0, gt=0, le=3600)
    # Commands published per round (each waits for its PUBACK before the round ends).
    batch: int = Field(default=500, ge=1, le=10_000)


class AuditSettings(BaseModel):
    """Signed checkpoints of the audit chain (collector/audit/), written to a bucket of the `[s3]` gateway
    that was created with Object Lock; each object is retained in COMPLIANCE mode for `retention_days`."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = ""  # empty: no checkpoints are written and `audit verify` refuses to run
    prefix: str = Field(default="audit/", pattern=r"^([A-Za-z0-9._-]+/)*$")
    # The collector's Ed25519 signing key (created if missing) and the public keys `audit verify` trusts
    # (PEM files; empty: the public half of key_path).
    key_path: Path = Path("/var/lib/cctv-collector/audit-key.pem")
    public_keys: list[Path] = []
    checkpoint_interval_s: float = Field(default=60.0, gt=0, le=3600)
    # PIPA safety rules Art. 8: at least 1 year, 2 where a system covers 50,000 people or more (Seoul's does).
    retention_days: int = Field(default=730, ge=365, le=36500)


class ConsoleSettings(BaseModel):
    """The operator's web console at `/` (collector/console/): static files; the API is its only back end."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # A map tile server inside the network ({z}/{x}/{y} template, http or https); empty: the district
    # boundaries alone. Its origin is allowed by the console's Content-Security-Policy.
    tile_url: str = Field(default="", pattern=r"^(https?://[^\s\"';]+)?$")
    tile_attribution: str = Field(default="", max_length=200)


class CollectorSettings(TomlThenEnv):
    model_config = SettingsConfigDict(env_prefix="COLLECTOR__", env_nested_delimiter="__", extra="forbid")

    collector_id: str = Field(default="collector-1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mqtt: MqttSettings = MqttSettings()
    store: StoreSettings = StoreSettings()
    ingest: IngestSettings = IngestSettings()
    http: HttpSettings = HttpSettings()
    platform: PlatformSettings = PlatformSettings()
    commands: CommandSettings = CommandSettings()
    live: LiveSettings = LiveSettings()
    # The clip bucket that `reconcile` compares with the index (empty bucket: reconcile is disabled).
    s3: S3Settings = S3Settings(bucket="")
    metrics_port: int = Field(default=9109, ge=0, le=65535)
    # Who may use the API. The defaults fail closed: no keys, every request 401; no policy, every action 403.
    access: AccessSettings = AccessSettings()
    audit: AuditSettings = AuditSettings()
    console: ConsoleSettings = ConsoleSettings()

    @property
    def command_key_file(self) -> Path:
        """`commands.key_file`, by default beside a SQLite index (else in /var/lib/cctv-collector)."""
        if self.commands.key_file is not None:
            return self.commands.key_file
        if self.store.url.startswith("sqlite://"):
            return Path(sqlite_path(self.store.url)).parent / "commands.key"
        return Path("/var/lib/cctv-collector/commands.key")
