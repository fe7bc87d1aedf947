"""Vendor and firmware profiles (firmware-configs/*.toml): which quirks a camera needs, and whether its
firmware is below the profile's minimum safe version. The schema is in firmware-configs/README.md.

Profiles load from the installed `firmware_configs` package, or from the repository folder when the project
is not installed. A malformed file is reported with its name and key path and skipped; the others load.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

REPO_CONFIG_DIR = Path(__file__).resolve().parents[1] / "firmware-configs"
FALLBACK_PROFILE = "generic"

Version = tuple[int, ...]
# The first dotted number is the version: "V5.7.3 build 221130" -> 5.7.3, "1.0.0_20230101" -> 1.0.0.
_DOTTED = re.compile(r"\d{1,9}(?:\.\d{1,9})+")
_NUMBER = re.compile(r"\d{1,9}")


def parse_version(text: str) -> Version | None:
    """A comparable version from a vendor firmware string; None if it holds no number.

    Trailing zero components are dropped so that 5.7 == 5.7.0; leading zeros are numeric ("02" == 2).
    """
    found = _DOTTED.search(text) or _NUMBER.search(text)
    if found is None:
        return None
    parts = [int(p) for p in found.group().split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _version(value: str) -> str:
    if parse_version(value) is None:
        raise ValueError(f"not a version: {value!r}")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionRange(_Strict):
    min: str = "0"
    max: str | None = None

    @field_validator("min", "max")
    @classmethod
    def _is_version(cls, value: str | None) -> str | None:
        return None if value is None else _version(value)


class MatchRules(_Strict):
    manufacturer: str = ".*"
    model: str = ".*"
    firmware: list[VersionRange] = Field(default_factory=list)

    @field_validator("manufacturer", "model")
    @classmethod
    def _is_regex(cls, value: str) -> str:
        return _regex(value)


class Quirks(_Strict):
    auth: Literal["ws-security", "http-digest", "none"] = "ws-security"
    zulu_timestamps: bool = True
    adjust_time: bool = True
    auth_needed_for_time: bool = False
    rtsp_port_from_ledger: bool = False
    prefer_get_capabilities: bool = False
    max_in_flight: int = Field(default=1, ge=1, le=16)
    request_timeout_s: float = Field(default=5.0, gt=0, le=120)


class _ProfileDoc(_Strict):
    schema_version: Literal[1]
    name: str = Field(min_length=1)
    vendor: str = ""
    min_safe_firmware: str
    match: MatchRules
    quirks: Quirks = Field(default_factory=Quirks)
    camsim: dict[str, Any] = Field(default_factory=dict)  # the simulator's table, not ours to check

    @field_validator("min_safe_firmware")
    @classmethod
    def _is_version(cls, value: str) -> str:
        return _version(value)


@dataclass(frozen=True)
class FirmwareProfile:
    name: str
    vendor: str
    source: str  # file name, for messages
    min_safe_firmware: str
    min_safe_version: Version
    manufacturer: re.Pattern[str]
    model: re.Pattern[str]
    firmware_ranges: tuple[tuple[Version, Version | None], ...]
    quirks: Quirks

    @property
    def specificity(self) -> tuple[int, int]:
        """Rules that exclude something rank first; generic `.*` patterns match the empty string."""
        patterns = (self.manufacturer, self.model)
        selective = sum(1 for p in patterns if p.search("") is None)
        return selective, sum(len(p.pattern) for p in patterns)

    def matches_device(self, manufacturer: str, model: str) -> bool:
        return bool(self.manufacturer.search(manufacturer) and self.model.search(model))

    def firmware_in_range(self, version: Version | None) -> bool:
        if not self.firmware_ranges:
            return True
        if version is None:
            return False
        return any(lo <= version and (hi is None or version < hi) for lo, hi in self.firmware_ranges)


@dataclass(frozen=True)
class ProfileProblem:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class DeviceStrings(Protocol):
    """What GetDeviceInformation said (agent.onvif_reader.CameraInfo has these fields)."""

    @property
    def manufacturer(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def firmware(self) -> str: ...


@dataclass(frozen=True)
class FirmwareAssessment:
    profile: FirmwareProfile | None  # whose quirks apply (falls back to generic)
    minimum_from: str | None  # the profile whose min_safe_firmware was applied
    version: Version | None  # None: the firmware string holds no version
    below_minimum: bool


def config_dir() -> Traversable:
    """The installed `firmware_configs` package, else the repository folder (not installed yet)."""
    try:
        return resources.files("firmware_configs")
    except ModuleNotFoundError:
        return REPO_CONFIG_DIR


def load_profiles(
    directory: Traversable | Path | None = None,
) -> tuple[list[FirmwareProfile], list[ProfileProblem]]:
    """Every valid profile in `directory` and the problems of the files that were skipped."""
    folder = config_dir() if directory is None else directory
    profiles: list[FirmwareProfile] = []
    problems: list[ProfileProblem] = []
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    for file in files:
        profile = _load_one(file, problems)
        if profile is None:
            continue
        if any(p.name == profile.name for p in profiles):
            problems.append(ProfileProblem(file.name, "name", f"duplicate profile name {profile.name!r}"))
            continue
        profiles.append(profile)
    for problem in problems:
        log.warning("firmware profile skipped: %s", problem)
    return profiles, problems


def _load_one(file: Traversable, problems: list[ProfileProblem]) -> FirmwareProfile | None:
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        problems.append(ProfileProblem(file.name, "(syntax)", str(exc)))
        return None
    try:
        doc = _ProfileDoc.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_input=False):
            key = ".".join(str(p) for p in err["loc"]) or "(file)"
            problems.append(ProfileProblem(file.name, key, err["msg"]))
        return None
    if doc.name != file.name.removesuffix(".toml"):
        problems.append(ProfileProblem(file.name, "name", f"{doc.name!r} differs from the file name"))
        return None
    return _profile(doc, file.name)


def _profile(doc: _ProfileDoc, source: str) -> FirmwareProfile:
    def version(text: str) -> Version:
        parsed = parse_version(text)
        assert parsed is not None  # checked by the model's validators
        return parsed

    ranges = tuple((version(r.min), None if r.max is None else version(r.max)) for r in doc.match.firmware)
    return FirmwareProfile(
        name=doc.name,
        vendor=doc.vendor,
        source=source,
        min_safe_firmware=doc.min_safe_firmware,
        min_safe_version=version(doc.min_safe_firmware),
        manufacturer=re.compile(doc.match.manufacturer),
        model=re.compile(doc.match.model),
        firmware_ranges=ranges,
        quirks=doc.quirks,
    )


class FirmwareCatalog:
    """Profiles tried most specific first; the `generic` profile is the fallback for quirks."""

    def __init__(self, profiles: Iterable[FirmwareProfile]) -> None:
        self.profiles: Sequence[FirmwareProfile] = sorted(
            profiles, key=lambda p: (tuple(-n for n in p.specificity), p.name)
        )
        self.fallback = next((p for p in self.profiles if p.name == FALLBACK_PROFILE), None)

    @classmethod
    def load(
        cls, directory: Traversable | Path | None = None
    ) -> tuple[FirmwareCatalog, list[ProfileProblem]]:
        profiles, problems = load_profiles(directory)
        return cls(profiles), problems

    def match(self, device: DeviceStrings) -> FirmwareProfile | None:
        """The most specific profile whose rules all hold, else the fallback."""
        version = parse_version(device.firmware)
        for profile in self.profiles:
            if profile.matches_device(device.manufacturer, device.model) and profile.firmware_in_range(
                version
            ):
                return profile
        return self.fallback

    def assess(self, device: DeviceStrings) -> FirmwareAssessment:
        """Quirks profile plus the minimum-firmware verdict.

        The minimum comes from the most specific profile matching manufacturer and model, whatever the
        firmware: an old firmware outside a vendor profile's range is exactly what must be reported.
        """
        version = parse_version(device.firmware)
        vendor = next((p for p in self.profiles if p.matches_device(device.manufacturer, device.model)), None)
        below = vendor is not None and version is not None and version < vendor.min_safe_version
        return FirmwareAssessment(
            profile=self.match(device),
            minimum_from=vendor.name if vendor else None,
            version=version,
            below_minimum=below,
        )
