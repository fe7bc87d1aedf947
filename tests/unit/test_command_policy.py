"""The district's command policy as a table: each way a command is refused, and what is served."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.command_policy import CommandPolicy, refusal
from agent.config import CommandSettings
from common.settings import ConfigError
from contract.messages import ArmRequest, ClipRequest, LiveRequest
from tests.signed_commands import OTHER_KEY, command_policy, sign_as_is

NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
SOON = NOW + timedelta(seconds=60)
GOLDEN = Path(__file__).parents[1] / "contract" / "golden"


def request(start_in_s: float = 0.0, length_s: float = 30.0, **fields: Any) -> ClipRequest:
    """A 112 clip request as the collector signs it (service, expiry a minute after NOW), unsigned yet."""
    start = NOW + timedelta(seconds=start_in_s)
    values = {"district": "gangnam", "request_id": "req-1", "camera_id": "gangnam-00001", "start": start,
              "end": start + timedelta(seconds=length_s), "purpose": "assault", "agency": "police-112",
              "priority": "112", "sent_at": NOW, "service": "112-video", "expires_at": SOON}  # fmt: skip
    return ClipRequest.model_validate(values | fields)


def signed_request(**fields: Any) -> ClipRequest:
    return sign_as_is(request(**fields))


def tampered(command: ClipRequest) -> ClipRequest:
    return command.model_copy(update={"camera_id": "gangnam-00002"})  # the signature does not cover this


@pytest.fixture
def policy(tmp_path: Path) -> CommandPolicy:
    return command_policy(tmp_path, agencies=["police-112", "fire-119"],
                          services=["112-video", "119-dispatch"], max_window_s=600, max_past_s=3600,
                          max_future_s=300)  # fmt: skip


# case -> (fields of the request, how it is signed, the refusal)
CASES: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "served": ({}, "collector", None),
    "served from the past (pre-roll)": ({"start_in_s": -3000}, "collector", None),
    "unsigned": ({}, "none", "signature_missing"),
    "unknown key": ({}, "other key", "unknown_key"),
    "forged (changed after signing)": ({}, "tampered", "signature_invalid"),
    "another district": ({"district": "mapo"}, "collector", "other_district"),
    "no expiry": ({"expires_at": None}, "collector", "expiry_missing"),
    "expired beyond the leeway": (
        {"expires_at": NOW - timedelta(seconds=31)},
        "collector",
        "command_expired",
    ),
    "expired within the leeway": ({"expires_at": NOW - timedelta(seconds=29)}, "collector", None),
    "valid for too long": ({"expires_at": NOW + timedelta(days=2)}, "collector", "expiry_too_far"),
    "agency not served": ({"agency": "private-guard"}, "collector", "agency_not_served"),
    "service not served": ({"service": "disaster"}, "collector", "service_not_served"),
    "no service": ({"service": None}, "collector", "service_missing"),
    "window too long": ({"length_s": 601}, "collector", "window_too_long"),
    "window too old": ({"start_in_s": -3601}, "collector", "window_too_old"),
    "window in the future": ({"start_in_s": 301}, "collector", "window_in_future"),
}


def build(fields: dict[str, Any], signing: str) -> ClipRequest:
    unsigned = request(**fields)
    if signing == "none":
        return unsigned
    if signing == "other key":
        return sign_as_is(unsigned, OTHER_KEY)
    signed = sign_as_is(unsigned)
    return tampered(signed) if signing == "tampered" else signed


@pytest.mark.parametrize("case", CASES)
def test_refusal_table(case: str, policy: CommandPolicy) -> None:
    fields, signing, expected = CASES[case]
    assert refusal(build(fields, signing), policy, NOW) == expected


def test_an_arm_request_is_verified_like_a_clip_request(policy: CommandPolicy) -> None:
    arm = ArmRequest(district="gangnam", request_id="arm-1", camera_id="gangnam-00001", duration_s=600,
                     agency="fire-119", sent_at=NOW, service="119-dispatch", expires_at=SOON)  # fmt: skip
    assert refusal(sign_as_is(arm), policy, NOW) is None
    assert refusal(arm, policy, NOW) == "signature_missing"
    assert refusal(sign_as_is(arm.model_copy(update={"agency": "x"})), policy, NOW) == "agency_not_served"


def test_a_live_view_is_verified_like_a_clip_and_may_not_run_past_max_live_s(policy: CommandPolicy) -> None:
    def live(action: str = "start", until_s: float = 600, **fields: Any) -> LiveRequest:
        values = {"district": "gangnam", "session_id": "live-1", "action": action,
                  "camera_id": "gangnam-00001", "until": NOW + timedelta(seconds=until_s),
                  "purpose": "pursuit", "agency": "police-112", "priority": "112", "sent_at": NOW,
                  "service": "112-video", "expires_at": SOON}  # fmt: skip
        return LiveRequest.model_validate(values | fields)

    assert refusal(sign_as_is(live()), policy, NOW) is None
    assert refusal(live(), policy, NOW) == "signature_missing"
    assert refusal(sign_as_is(live(), OTHER_KEY), policy, NOW) == "unknown_key"
    assert refusal(sign_as_is(live(agency="x")), policy, NOW) == "agency_not_served"
    assert refusal(sign_as_is(live(expires_at=NOW - timedelta(minutes=1))), policy, NOW) == "command_expired"
    assert refusal(sign_as_is(live(until_s=-1)), policy, NOW) == "until_passed"
    assert (
        refusal(sign_as_is(live("renew", until_s=900 + 31)), policy, NOW) == "until_too_far"
    )  # 900 s + leeway
    assert refusal(sign_as_is(live("renew", until_s=900)), policy, NOW) is None
    assert refusal(sign_as_is(live("stop", until_s=-1)), policy, NOW) is None  # a stop needs no future


def test_a_district_serving_every_service_takes_a_signed_command_without_one(tmp_path: Path) -> None:
    assert refusal(signed_request(service=None), command_policy(tmp_path), NOW) is None


def test_allow_unsigned_serves_unsigned_commands_but_still_checks_signed_ones(tmp_path: Path) -> None:
    policy = command_policy(tmp_path, allow_unsigned=True)
    assert refusal(request(expires_at=None), policy, NOW) is None
    assert refusal(request(length_s=601), policy, NOW) == "window_too_long"
    assert refusal(tampered(signed_request()), policy, NOW) == "signature_invalid"


def test_the_golden_commands_are_signed_by_the_collector_test_key(tmp_path: Path) -> None:
    policy = command_policy(tmp_path)
    models = (("clip_request", ClipRequest), ("arm_request", ArmRequest), ("live_request", LiveRequest))
    for name, model in models:
        command = model.model_validate(json.loads((GOLDEN / f"{name}.json").read_text())["payload"])
        assert command.expires_at is not None
        assert refusal(command, policy, command.sent_at) is None, name
        assert refusal(command, policy, command.expires_at + timedelta(minutes=1)) == "command_expired"


@pytest.mark.parametrize("content", ["garbage", None])
def test_an_unusable_collector_key_is_a_configuration_error(tmp_path: Path, content: str | None) -> None:
    key = tmp_path / "collector.pem"
    if content is not None:
        key.write_text(content)
    with pytest.raises(ConfigError, match=r"collector\.pem"):
        CommandPolicy.load(CommandSettings(collector_public_keys=[key]), "gangnam")


def test_validate_config_exits_2_on_a_bad_collector_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ledger.csv").write_text("camera_id,host\ngangnam-00001,127.41.0.1\n")
    (tmp_path / "bad.pem").write_text("garbage")
    config = tmp_path / "agent.toml"
    config.write_text(f'district = "gangnam"\nagent_id = "a1"\nledger = "{tmp_path / "ledger.csv"}"\n'
                      f'[commands]\ncollector_public_keys = ["{tmp_path / "bad.pem"}"]\n')  # fmt: skip
    assert main(["validate-config", str(config)]) == 2
    assert "commands.collector_public_keys" in capsys.readouterr().err


def test_a_command_may_not_outlive_the_memory_of_request_ids() -> None:
    from pydantic import ValidationError

    from agent.config import AgentSettings

    with pytest.raises(ValidationError, match="max_expiry_s"):
        AgentSettings(district="gangnam", agent_id="a1", ledger=Path("l.csv"),
                      commands={"max_expiry_s": 86_400}, clips={"seen_ids_retention_s": 3600})  # fmt: skip
