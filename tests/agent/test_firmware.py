"""Firmware profiles: version parsing, matching the shipped profiles, malformed files."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.firmware import REPO_CONFIG_DIR, FirmwareCatalog, config_dir, load_profiles, parse_version


@dataclass(frozen=True)
class Device:
    manufacturer: str
    model: str
    firmware: str


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("V5.7.3 build 221130", (5, 7, 3)),
        ("2.21.02", (2, 21, 2)),
        ("1.0.0_20230101", (1,)),
        ("2.800.0000000.31.R", (2, 800, 0, 31)),
        ("2.10.01_20230412", (2, 10, 1)),
        ("build 221130, V5.7", (5, 7)),  # a dotted number beats a bare build number
        ("firmware 7", (7,)),
        ("unknown", None),
        ("", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert parse_version(text) == version


def test_versions_compare_numerically_not_as_text() -> None:
    def v(text: str) -> tuple[int, ...]:
        parsed = parse_version(text)
        assert parsed is not None
        return parsed

    assert v("V5.10.0") > v("V5.9.9 build 230101")
    assert v("5.7") == v("5.7.0 build 1")
    assert v("2.21.02") < v("2.21.10")
    assert v("1.0.0_20230101") < v("1.0.1")


@pytest.fixture(scope="module")
def catalog() -> FirmwareCatalog:
    cat, problems = FirmwareCatalog.load()
    assert problems == []
    return cat


def test_shipped_profiles_load_most_specific_first(catalog: FirmwareCatalog) -> None:
    names = [p.name for p in catalog.profiles]
    assert {"hikvision", "dahua", "hanwha", "axis", "idis", "generic"} <= set(names)
    assert names[-1] == "generic"
    assert catalog.fallback is not None and catalog.fallback.name == "generic"


@pytest.mark.parametrize(
    ("device", "profile", "minimum_from", "below"),
    [
        (Device("Hikvision", "DS-2CD2143G2-I", "V5.7.3 build 220112"), "hikvision", "hikvision", False),
        (Device("HIKVISION", "DS-2CD2143G2-I", "V5.5.0 build 190101"), "hikvision", "hikvision", True),
        # Older than the profile's range: generic quirks, but still reported against Hikvision's minimum.
        (Device("Hikvision", "DS-2CD2042WD", "V4.0.1 build 150101"), "generic", "hikvision", True),
        (Device("Dahua", "IPC-HFW2431S-S-S2", "2.840.0000000.1.R"), "dahua", "dahua", False),
        (Device("Hanwha Vision", "XNO-6080R", "2.10.01_20230412"), "hanwha", "hanwha", False),
        (Device("Hanwha Vision", "XNO-6080R", "2.09.99_20220101"), "hanwha", "hanwha", True),
        (Device("AXIS", "P3245-LVE", "10.12.199"), "axis", "axis", False),
        (Device("IDIS", "DC-D4233RX", "3.6.2"), "idis", "idis", False),
        (Device("Acme", "Cam 1", "weird"), "generic", "generic", False),  # no version: not claimed unsafe
    ],
)
def test_match_and_minimum(
    catalog: FirmwareCatalog, device: Device, profile: str, minimum_from: str, below: bool
) -> None:
    assessment = catalog.assess(device)
    assert assessment.profile is not None and assessment.profile.name == profile
    assert assessment.minimum_from == minimum_from
    assert assessment.below_minimum is below


def test_quirks_come_from_the_matched_profile(catalog: FirmwareCatalog) -> None:
    hik = catalog.match(Device("Hikvision", "DS-2CD2143G2-I", "V5.7.3"))
    assert hik is not None and hik.quirks.auth == "http-digest"
    generic = catalog.match(Device("Acme", "X", "1.0"))
    assert generic is not None and generic.quirks.auth == "ws-security"


def test_config_dir_falls_back_to_the_repository_folder() -> None:
    folder = config_dir()
    assert any(f.name == "hikvision.toml" for f in folder.iterdir())
    assert REPO_CONFIG_DIR.is_dir()


BROKEN = {
    "syntax.toml": 'name = "syntax"\n[match\n',
    "badversion.toml": (
        'schema_version = 1\nname = "badversion"\nmin_safe_firmware = "latest"\n'
        '[match]\nmanufacturer = "x"\nfirmware = [{ min = "1.0", max = "soon" }]\n'
    ),
    "badregex.toml": (
        'schema_version = 1\nname = "badregex"\nmin_safe_firmware = "1.0"\n[match]\nmodel = "("\n'
    ),
    "typo.toml": (
        'schema_version = 1\nname = "typo"\nmin_safe_firmware = "1.0"\n[match]\n[quirks]\nmax_in_fligth = 2\n'
    ),
    "renamed.toml": 'schema_version = 1\nname = "other"\nmin_safe_firmware = "1.0"\n[match]\n',
}


def test_malformed_files_are_named_with_their_key_and_others_still_load(tmp_path: Path) -> None:
    for name in ("hikvision.toml", "generic.toml"):
        shutil.copy(REPO_CONFIG_DIR / name, tmp_path / name)
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    profiles, problems = load_profiles(tmp_path)
    assert sorted(p.name for p in profiles) == ["generic", "hikvision"]
    found = {(p.file, p.key) for p in problems}
    assert ("syntax.toml", "(syntax)") in found
    assert ("badversion.toml", "min_safe_firmware") in found
    assert ("badversion.toml", "match.firmware.0.max") in found
    assert ("badregex.toml", "match.model") in found
    assert ("typo.toml", "quirks.max_in_fligth") in found
    assert ("renamed.toml", "name") in found
    assert "not a version: 'soon'" in str(next(p for p in problems if p.key == "match.firmware.0.max"))
