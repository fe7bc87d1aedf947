"""Load vendor personalities for the simulator from firmware-configs/*.toml.

Each file's `[camsim]` table maps one-to-one onto `Personality` fields; the `[match]` and
`[quirks]` tables and `min_safe_firmware` are for the agent and only checked for presence here.
See firmware-configs/README.md for the schema.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, get_args

from agent.firmware import config_dir
from camsim.model import AuthMode, Personality

log = logging.getLogger(__name__)

_FIELDS = {f.name: f for f in dataclasses.fields(Personality)}
_DEFAULTS = Personality()
_AUTH_MODES = frozenset(get_args(AuthMode))
_REQUIRED_TOP = ("name", "min_safe_firmware", "match", "quirks", "camsim")


class PersonalityConfigError(ValueError):
    """A firmware-config file that does not follow the schema."""


def _check_value(path: Traversable, key: str, value: Any) -> None:
    if key not in _FIELDS:
        raise PersonalityConfigError(f"{path.name}: [camsim].{key} is not a Personality field")
    expected = type(getattr(_DEFAULTS, key))
    if type(value) is not expected:  # exact: bool is an int subclass
        raise PersonalityConfigError(f"{path.name}: [camsim].{key} must be {expected.__name__}")
    if key == "auth" and value not in _AUTH_MODES:
        raise PersonalityConfigError(f"{path.name}: [camsim].auth must be one of {sorted(_AUTH_MODES)}")


def load_personality(path: Traversable) -> Personality:
    """The Personality described by one firmware-config file."""
    with path.open("rb") as fh:
        doc = tomllib.load(fh)
    missing = [key for key in _REQUIRED_TOP if key not in doc]
    if missing:
        raise PersonalityConfigError(f"{path.name}: missing {', '.join(missing)}")
    table = dict(doc["camsim"])
    table.setdefault("name", doc["name"])
    for key, value in table.items():
        _check_value(path, key, value)
    return Personality(**table)


def load_personalities(directory: Traversable | Path | None = None) -> dict[str, Personality]:
    """All personalities in `directory` (default: the installed firmware-configs), by name."""
    directory = directory if directory is not None else config_dir()
    result: dict[str, Personality] = {}
    files = sorted((p for p in directory.iterdir() if p.name.endswith(".toml")), key=lambda p: p.name)
    if not files:
        raise PersonalityConfigError(f"no firmware-config *.toml files in {directory}")
    for path in files:
        personality = load_personality(path)
        if personality.name in result:
            raise PersonalityConfigError(f"{path.name}: duplicate personality name {personality.name!r}")
        result[personality.name] = personality
    log.debug("loaded %s personalities from %s", len(result), directory)
    return result
