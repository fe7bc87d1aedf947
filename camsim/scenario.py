"""Faults on demand: validate fault fields, select cameras, load and apply a scenario file.

A scenario is TOML:

    seed = 7                      # optional; picks the same "5%" every run
    [[fault]]
    cameras = "gangnam-0000[1-3]" # an id, an id glob, a list of those, or a fraction "5%"
    offline = true

The same validation serves the control API, so a bad field gives the same message in both places.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import random
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from camsim.model import CameraSpec, Faults, ImageFault

# Fields a caller may set; started_at is bookkeeping for the reboot schedule.
FAULT_FIELDS = tuple(f.name for f in dataclasses.fields(Faults) if f.name != "started_at")
_IMAGE_VALUES = get_args(ImageFault)


class FaultError(ValueError):
    """A fault field, value or camera selector is invalid; the message says which and why."""


def _check_value(name: str, value: object) -> object:
    if name in ("offline", "hang", "wrong_credentials"):
        if not isinstance(value, bool):
            raise FaultError(f"{name}: expected true or false, got {value!r}")
        return value
    if name == "image":
        if value not in _IMAGE_VALUES:
            raise FaultError(f"image: expected one of {', '.join(_IMAGE_VALUES)}, got {value!r}")
        return value
    if name == "latency_ms":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FaultError(f"latency_ms: expected an integer >= 0, got {value!r}")
        return value
    nullable = name in ("stream_stop_after_s", "reboot_every_s", "replay_stall_after_s")
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f"{name}: expected a number{' or null' if nullable else ''}, got {value!r}")
    if name not in ("clock_skew_s", "replay_time_shift_s") and value <= 0:
        raise FaultError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)


def validate_fault_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """Check names and types of a partial Faults update; return it normalised (ints to floats)."""
    unknown = sorted(set(fields) - set(FAULT_FIELDS))
    if unknown:
        raise FaultError(f"unknown fault field(s): {', '.join(unknown)}; known: {', '.join(FAULT_FIELDS)}")
    return {name: _check_value(name, value) for name, value in fields.items()}


def apply_fault_fields(faults: Faults, fields: Mapping[str, object]) -> None:
    """Set validated fields; a new reboot schedule starts counting now."""
    for name, value in fields.items():
        setattr(faults, name, value)
    if "reboot_every_s" in fields or "reboot_down_s" in fields:
        faults.started_at = time.monotonic()
    if faults.reboot_every_s is not None and faults.reboot_down_s >= faults.reboot_every_s:
        raise FaultError("reboot_down_s must be shorter than reboot_every_s")


def patch_faults(faults: Faults, fields: Mapping[str, object]) -> None:
    """Validate then apply, leaving `faults` untouched when anything is wrong."""
    clean = validate_fault_fields(fields)
    trial = dataclasses.replace(faults)
    apply_fault_fields(trial, clean)
    apply_fault_fields(faults, clean)


def select_cameras(specs: Sequence[CameraSpec], selector: object, *, seed: int = 0) -> list[CameraSpec]:
    """Cameras named by an id, an id glob, a list of ids/globs, or a fraction like "5%" (seeded)."""
    if isinstance(selector, str) and selector.strip().endswith("%"):
        return _select_fraction(specs, selector.strip(), seed)
    patterns = [selector] if isinstance(selector, str) else selector
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise FaultError(f"cameras: expected an id, a glob, a list of them or a percentage, got {selector!r}")
    chosen = [s for s in specs if any(fnmatch.fnmatchcase(s.camera_id, p) for p in patterns)]
    if not chosen:
        raise FaultError(f"cameras: {selector!r} matches no camera")
    return chosen


def _select_fraction(specs: Sequence[CameraSpec], text: str, seed: int) -> list[CameraSpec]:
    try:
        percent = float(text[:-1])
    except ValueError:
        raise FaultError(f"cameras: bad percentage {text!r}") from None
    if not 0 < percent <= 100:
        raise FaultError(f"cameras: percentage must be in (0, 100], got {text!r}")
    count = max(1, round(len(specs) * percent / 100))
    picked = random.Random(f"{seed}:{text}").sample(range(len(specs)), count)
    return [specs[i] for i in sorted(picked)]


@dataclass(frozen=True)
class FaultRule:
    cameras: object  # selector as written in the file
    fields: dict[str, object]


@dataclass(frozen=True)
class Scenario:
    seed: int
    rules: tuple[FaultRule, ...]


def parse_scenario(data: Mapping[str, object]) -> Scenario:
    unknown = sorted(set(data) - {"seed", "fault"})
    if unknown:
        raise FaultError(f"scenario: unknown key(s) {', '.join(unknown)}; expected seed and [[fault]]")
    seed = data.get("seed", 0)
    rules_raw = data.get("fault", [])
    if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(rules_raw, list):
        raise FaultError("scenario: seed must be an integer and fault an array of tables ([[fault]])")
    rules: list[FaultRule] = []
    for i, raw in enumerate(rules_raw):
        if not isinstance(raw, dict) or "cameras" not in raw:
            raise FaultError(f"fault[{i}]: needs a cameras = ... selector")
        fields = {k: v for k, v in raw.items() if k != "cameras"}
        try:
            rules.append(FaultRule(raw["cameras"], validate_fault_fields(fields)))
        except FaultError as exc:
            raise FaultError(f"fault[{i}]: {exc}") from None
    return Scenario(seed, tuple(rules))


def load_scenario(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FaultError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data)


def apply_scenario(scenario: Scenario, specs: Sequence[CameraSpec]) -> dict[str, int]:
    """Apply rules in order (later rules win per field); return how many cameras each rule hit."""
    hits: dict[str, int] = {}
    for i, rule in enumerate(scenario.rules):
        try:
            chosen = select_cameras(specs, rule.cameras, seed=scenario.seed)
            for spec in chosen:
                patch_faults(spec.faults, rule.fields)
        except FaultError as exc:
            raise FaultError(f"fault[{i}]: {exc}") from None
        hits[f"fault[{i}]"] = len(chosen)
    return hits
