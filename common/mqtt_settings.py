"""Broker connection settings, the same section in agent and collector configuration files."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class MqttSettings(BaseModel):
    """How to reach the MQTT broker (MQTT 5; TLS and username/password optional)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=600)
    client_id: str | None = Field(default=None, max_length=64)
