"""The policy file: the example loads; inconsistent or unsafe policies are refused with a key path."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from collector.access.policy import Policy, load_policy
from common.settings import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "policy.example.toml"


def example() -> dict[str, Any]:
    with EXAMPLE.open("rb") as fh:
        return tomllib.load(fh)


def test_example_covers_the_seven_agency_kinds() -> None:
    policy = load_policy(EXAMPLE)
    kinds = {
        a: (p.video, p.scope, p.districts == "all", tuple(p.services)) for a, p in policy.agencies.items()
    }
    assert kinds == {
        "police-112": (True, "incident", True, ("112-video", "112-dispatch")),
        "fire-119": (True, "incident", True, ("119-dispatch",)),
        "disaster-southeast": (True, "incident", False, ("disaster",)),
        "vulnerable-support": (True, "incident", True, ("vulnerable",)),
        "gangnam-control": (True, "own_district", False, ("112-video", "disaster", "vulnerable")),
        "platform-ops": (False, "none", True, ()),
        "audit-office": (False, "none", False, ()),
    }
    assert policy.agencies["vulnerable-support"].radius_cap_m == 5000


def test_no_policy_file_is_the_empty_policy() -> None:
    assert load_policy(None) == Policy()


def changed(path: str, value: object) -> dict[str, Any]:
    """The example with the dotted `path` set to `value` (None deletes it)."""
    doc = copy.deepcopy(example())
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("agencies.audit-office.video", True, "an agency with video needs services"),
        ("agencies.police-112.roles", ["operator", "auditor"], "must have video = false"),
        ("agencies.platform-ops.services", ["112-video"], "an agency without video has no services"),
        ("agencies.platform-ops.scope", "incident", "an agency without video has no services"),
        ("agencies.disaster-southeast.districts", ["gangnam", "atlantis"], "unknown district(s) atlantis"),
        ("agencies.fire-119.services", ["119-dispatch", "coast-guard"], "Input should be"),
        ("agencies.gangnam-control.districts", "all", "needs its districts listed"),
        ("agencies.police-112.max_radius_m", {"112-video": 1000}, "max_radius_m needs exactly one value"),
        ("agencies.fire-119.incident_max_hours", {"119-dispatch": 0}, "every value must be positive"),
        ("agencies.vulnerable-support.radius_cap_m", None, "radius_growth_m_per_min needs radius_cap_m"),
        ("agencies.fire-119.roles", ["operator", "director"], "undefined role(s) director"),
        ("agencies.fire-119.max_window_s", 86_400, "less than or equal to 3600"),
        ("agencies.fire-119.colour", "red", "Extra inputs are not permitted"),
        ("roles.operator.actions", ["clip.download"], "Input should be"),
        ("agencies.Police", {"name": "x", "roles": ["operator"]}, "ids must be lowercase"),
    ],
)
def test_inconsistent_policies_are_refused(path: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Policy.model_validate(changed(path, value))
    assert message in str(info.value)


def test_load_policy_lists_errors_by_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text(
        '[roles.operator]\nactions = ["incident.open"]\n'
        '[agencies.x]\nname = "X"\nroles = ["operator"]\nvideo = true\nservices = ["119-dispatch"]\n'
        'districts = ["gangnam", "nowhere"]\nscope = "incident"\nmax_window_s = 0\n'
    )
    with pytest.raises(ConfigError) as info:
        load_policy(bad)
    assert info.value.source == str(bad)
    assert any(line.startswith("agencies.x.districts: ") and "nowhere" in line for line in info.value.errors)
    assert any(line.startswith("agencies.x.max_window_s: ") for line in info.value.errors)


@pytest.mark.parametrize(("content", "message"), [(None, "file not found"), ("[roles\n", "invalid TOML")])
def test_unreadable_policy_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "policy.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert message in info.value.errors[0]
