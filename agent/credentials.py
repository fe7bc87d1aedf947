"""Camera credentials, kept apart from the ledger: a TOML secrets file (mode 0600) or the environment.

File format:  [credentials."cam/gangnam-00001"]  username = "admin"  password = "..."
A ledger row names its entry by `credentials_ref`; the entry `default` applies to rows without one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from common.settings import ConfigError, read_toml


@dataclass(frozen=True)
class Credentials:
    username: str
    password: SecretStr

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


class CredentialStore:
    """Looks up credentials by reference; never logs or returns them in text form."""

    def __init__(self, entries: dict[str, Credentials]) -> None:
        self._entries = entries

    @classmethod
    def from_file(cls, path: Path | None) -> CredentialStore:
        entries: dict[str, Credentials] = {}
        if path is not None:
            table = read_toml(path).get("credentials", {})
            if not isinstance(table, dict):
                raise ConfigError(str(path), ["credentials: must be a table of tables"])
            for ref, entry in table.items():
                entries[ref] = _entry(path, ref, entry)
        default_user = os.environ.get("AGENT_CAMERA_USERNAME")
        default_password = os.environ.get("AGENT_CAMERA_PASSWORD")
        if default_user and default_password and "default" not in entries:
            entries["default"] = Credentials(default_user, SecretStr(default_password))
        return cls(entries)

    def get(self, ref: str) -> Credentials | None:
        return self._entries.get(ref or "default") or self._entries.get("default")

    def __len__(self) -> int:
        return len(self._entries)


def _entry(path: Path, ref: str, entry: object) -> Credentials:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("username"), str)
        or not isinstance(entry.get("password"), str)
    ):
        raise ConfigError(str(path), [f"credentials.{ref}: needs string username and password"])
    return Credentials(entry["username"], SecretStr(entry["password"]))
