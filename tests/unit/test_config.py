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


def test_validate_config_accepts_the_example_with_its_files(tmp_path, monkeypatch, capsys):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text("camera_id,host\ncam-1,127.20.0.1\n")
    monkeypatch.setenv("AGENT__LEDGER", str(ledger))
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[credentials."cam/cam-1"]\nusername = "admin"\npassword = "pw"\n')
    monkeypatch.setenv("AGENT__SECRETS_FILE", str(secrets))
    assert agent_cli.main(["validate-config", str(ROOT / "deploy" / "agent.example.toml")]) == 0


def _config(tmp_path, body: str):
    path = tmp_path / "agent.toml"
    path.write_text(f'district = "gangnam"\nagent_id = "g1"\nledger = "{tmp_path}/ledger.csv"\n{body}')
    return path


def test_a_missing_ledger_is_a_configuration_error(tmp_path, capsys):
    assert agent_cli.main(["validate-config", str(_config(tmp_path, ""))]) == 2
    assert "ledger file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[discovery]\ntargets = ["10.0.0.0/8"]\n', "more than"),
        ('[discovery]\ntargets = ["not-an-address"]\n', "discovery.targets"),
        ("[onvif]\nretry_base_s = 10\nretry_max_s = 5\n", "retry_max_s must not be smaller"),
    ],
)
def test_values_that_would_fail_at_run_time_fail_validation(tmp_path, capsys, body: str, message: str):
    (tmp_path / "ledger.csv").write_text("camera_id,host\ncam-1,127.20.0.1\n")
    assert agent_cli.main(["validate-config", str(_config(tmp_path, body))]) == 2
    assert message in capsys.readouterr().err


def test_a_broken_secrets_file_is_a_configuration_error(tmp_path, capsys):
    (tmp_path / "ledger.csv").write_text("camera_id,host\ncam-1,127.20.0.1\n")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[credentials."cam/1"]\nusername = "admin"\n')
    path = _config(tmp_path, f'secrets_file = "{secrets}"\n')
    assert agent_cli.main(["validate-config", str(path)]) == 2
    assert "needs string username and password" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_unreadable_config_files_are_configuration_errors(tmp_path, capsys, kind: str):
    path = tmp_path / "agent.toml"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe\x00district")
    assert agent_cli.main(["validate-config", str(path)]) == 2
    assert str(path) in capsys.readouterr().err
