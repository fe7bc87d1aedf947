from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import cli as agent_cli
from agent.config import AgentSettings
from common.settings import ConfigError, load
from tests.signed_commands import collector_key_file

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
    key = collector_key_file(tmp_path)
    monkeypatch.setenv("AGENT__COMMANDS__COLLECTOR_PUBLIC_KEYS", json.dumps([str(key)]))
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
        ('[s3]\naccess_key = "AKIA1"\n', "s3.secret_key: Value error, required when s3.access_key is set"),
        ('[s3]\nsecret_key = "x"\n', "s3.secret_key: Value error, given without s3.access_key"),
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


def test_discover_needs_no_s3(tmp_path, capsys, monkeypatch):
    """boto3 refuses half a key pair from the environment: discover must not build an S3 client at all."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA1")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    (tmp_path / "ledger.csv").write_text("camera_id,host,onvif_port\ncam-1,127.77.3.1,9\n")  # refused at once
    path = _config(tmp_path, "metrics_port = 0\n[onvif]\ntimeout_s = 2\n")
    assert agent_cli.main(["discover", "--config", str(path), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["cameras"][0]["camera_id"] == "cam-1"
    assert "Traceback" not in out.err


def test_run_with_half_an_s3_key_pair_from_the_environment_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA1")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    (tmp_path / "ledger.csv").write_text("camera_id,host\ncam-1,127.77.3.1\n")
    clips = f'[clips]\nspool_dir = "{tmp_path}/spool"\nkey_file = "{tmp_path}/k.pem"\n'
    path = _config(tmp_path, "metrics_port = 0\n" + clips)
    assert agent_cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "s3:" in err and "AWS_SECRET_ACCESS_KEY" in err and "Traceback" not in err
