"""Broker connection settings, the same section in agent and collector configuration files.

Secure by default: TLS is on as soon as a CA is configured (and the port then defaults to 8883), and a
password is never sent over plain TCP to a broker off this host unless `allow_plaintext_password` says so.
Secrets may come from a file (`password_file`, e.g. a Docker or Kubernetes secret under /run/secrets).
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator

from common.settings import read_secret_file

PLAIN_PORT = 1883
TLS_PORT = 8883


class MqttSettings(BaseModel):
    """How to reach the MQTT broker (MQTT 5): TLS, username/password or a client certificate."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    # Default 1883, or 8883 when TLS is in use.
    port: int = Field(default=PLAIN_PORT, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    # A file holding the password (one line; a trailing newline is ignored). Not together with `password`.
    password_file: FilePath | None = None
    # None: TLS when `ca_file` is set. True without `ca_file` trusts the system's CA store.
    tls: bool | None = None
    ca_file: FilePath | None = None
    # A client certificate and its key, for brokers that take the username from it
    # (Mosquitto `use_identity_as_username`).
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    # Send a password over plain TCP to a broker that is not on this host. Only for a network that is
    # itself encrypted (a VPN); otherwise anyone on the path reads the password.
    allow_plaintext_password: bool = False
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=600)
    client_id: str | None = Field(default=None, max_length=64)

    @property
    def use_tls(self) -> bool:
        return self.tls if self.tls is not None else self.ca_file is not None

    @model_validator(mode="after")
    def _secure(self) -> MqttSettings:
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("give password or password_file, not both")
            self.password = SecretStr(read_secret_file(self.password_file))
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.cert_file is not None and not self.use_tls:
            raise ValueError("a client certificate (cert_file) needs TLS: set ca_file or tls = true")
        if self.use_tls and "port" not in self.model_fields_set:
            self.port = TLS_PORT
        if self._password_in_clear() and not self.allow_plaintext_password:
            raise ValueError(
                f"refusing to send a password over plain TCP to {self.host}: set ca_file (TLS), or "
                "allow_plaintext_password = true if the network itself is encrypted"
            )
        return self

    def _password_in_clear(self) -> bool:
        return self.password is not None and not self.use_tls and not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses. Names are not resolved: any other counts as remote."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
