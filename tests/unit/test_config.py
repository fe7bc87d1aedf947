from __future__ import annotations

from pathlib import Path

import pytest

from agent import cli as agent_cli
from agent.config import AgentSettings
from contract.settings import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid():
    settings = load(AgentSettings, ROOT / "deploy" / "agent.example.toml")
    assert settings.district == "gangnam"
    assert settings.mqtt.port == 1883


def test_environment_overrides_file(tmp_path, monkeypatch):
    path = tmp_path / "a.toml"
    path.write_text('district = "mapo"\nagent_id = "mapo-1"\nledger = "l.csv"\n[mqtt]\nport = 1884\n')
    monkeypatch.setenv("AGENT__MQTT__PORT", "2883")
    monkeypatch.setenv("AGENT__MQTT__PASSWORD", "s3cret")
    settings = load(AgentSettings, path)
    assert settings.mqtt.port == 2883
    assert "s3cret" not in repr(settings)
    assert settings.mqtt.password is not None and settings.mqtt.password.get_secret_value() == "s3cret"


def test_every_error_is_reported_with_its_key_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('district = "atlantis"\nagent_id = "a/b"\n[mqtt]\nport = 70000\nhots = "x"\n')
    with pytest.raises(ConfigError) as err:
        load(AgentSettings, path)
    text = "\n".join(err.value.errors)
    for key in ("district:", "agent_id:", "ledger:", "mqtt.port:", "mqtt.hots:"):
        assert key in text


def test_validate_config_exits_2_with_readable_lines(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('district = "gangnam"\nagent_id = "g1"\nledger = "l.csv"\n[mqtt]\nport = "eighty"\n')
    assert agent_cli.main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: mqtt.port: Input should be a valid integer" in err


def test_validate_config_reports_toml_syntax_errors(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text("district = \n")
    assert agent_cli.main(["validate-config", str(path)]) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_validate_config_accepts_a_good_file(capsys):
    assert agent_cli.main(["validate-config", str(ROOT / "deploy" / "agent.example.toml")]) == 0
