"""Loading a service's settings: a TOML file, overridden by environment variables, validated by pydantic.

Shared by agent and collector so both report configuration errors the same way: one line per error, as a key
path and a message (`mqtt.port: Input should be less than or equal to 65535`), and exit code 2.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

EXIT_CONFIG = 2

S = TypeVar("S", bound=BaseSettings)


class ConfigError(Exception):
    """The configuration cannot be used; `errors` holds one readable line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(errors))
        self.source = source
        self.errors = errors


class TomlThenEnv(BaseSettings):
    """Base for settings: environment variables (PREFIX__SECTION__KEY) override the TOML file's values."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Sources earlier in the tuple win: environment over file (passed as init kwargs) over secrets dir.
        return env_settings, init_settings, file_secret_settings


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file as a dict; ConfigError naming the file and the position of a syntax error."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"invalid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not UTF-8 text"]) from None
    except OSError as exc:  # a directory, no permission, ...
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None


def load(settings_cls: type[S], path: Path | None) -> S:
    """Settings from `path` (if given) and the environment; ConfigError listing every invalid key."""
    values = read_toml(path) if path is not None else {}
    try:
        return settings_cls(**values)
    except ValidationError as exc:
        raise ConfigError(str(path or "environment"), error_lines(exc)) from None


def read_secret_file(path: Path) -> str:
    """A secret kept in a file of one line (a Docker or Kubernetes secret under /run/secrets); ValueError,
    which names the file but never its content, if it is unreadable or not one non-empty line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    secret = text.rstrip("\r\n")
    if not secret or "\n" in secret:
        raise ValueError(f"{path}: expected one non-empty line")
    return secret


def error_lines(exc: ValidationError) -> list[str]:
    """Each validation error as `key.path: message` (secrets are never echoed back)."""
    lines = []
    for err in exc.errors(include_input=False):
        loc = ".".join(str(part) for part in err["loc"]) or "(root)"
        lines.append(f"{loc}: {err['msg']}")
    return lines
