"""Secure by default: TLS to the broker with a CA, no password in clear off the host, secrets from files
(/run/secrets) for the broker and S3."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent import cli as agent_cli
from collector import cli as collector_cli
from common.mqtt_settings import MqttSettings
from tests.tls_certs import write_test_certs


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    return write_test_certs(tmp_path / "tls")


def test_a_configured_ca_turns_tls_on_with_the_tls_port(ca_file: Path) -> None:
    settings = MqttSettings(host="broker.city.example", ca_file=ca_file)
    assert settings.use_tls
    assert settings.port == 8883
    assert MqttSettings(ca_file=ca_file, port=9883).port == 9883
    assert not MqttSettings().use_tls and MqttSettings().port == 1883


def test_tls_can_be_turned_off_explicitly_even_with_a_ca(ca_file: Path) -> None:
    settings = MqttSettings(ca_file=ca_file, tls=False)
    assert not settings.use_tls and settings.port == 1883


@pytest.mark.parametrize("host", ["broker.city.example", "10.0.0.5", "127.0.0.1.example"])
def test_a_password_over_plain_tcp_to_another_host_is_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="refusing to send a password over plain TCP"):
        MqttSettings(host=host, username="agent-mapo", password="pw")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.64.0.9", "localhost", "::1", "[::1]"])
def test_a_password_to_this_host_may_go_over_plain_tcp(host: str) -> None:
    assert MqttSettings(host=host, username="agent-mapo", password="pw").password is not None


def test_plain_tcp_with_a_password_when_told_explicitly_or_over_tls(ca_file: Path) -> None:
    told = MqttSettings(host="10.0.0.5", username="u", password="pw", allow_plaintext_password=True)
    assert not told.use_tls
    assert MqttSettings(host="10.0.0.5", username="u", password="pw", ca_file=ca_file).use_tls
    assert MqttSettings(host="10.0.0.5", username="u", password="pw", tls=True).use_tls
    assert MqttSettings(host="10.0.0.5", username="u").password is None  # no password, nothing to leak


def test_the_password_comes_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt_password"
    secret.write_text("s3cret-from-file\n")
    settings = MqttSettings(username="collector-1", password_file=secret)
    assert settings.password is not None
    assert settings.password.get_secret_value() == "s3cret-from-file"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not point to a file"), ("", "one non-empty line"), ("a\nb\n", "one non-empty line")],
)
def test_an_unusable_secret_file_is_refused(tmp_path: Path, content: str | None, message: str) -> None:
    secret = tmp_path / "mqtt_password"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ValidationError, match=message):
        MqttSettings(username="u", password_file=secret)


def test_password_and_password_file_do_not_go_together(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x")
    with pytest.raises(ValidationError, match="not both"):
        MqttSettings(username="u", password="y", password_file=secret)


def test_a_client_certificate_needs_its_key_and_tls(ca_file: Path) -> None:
    cert, key = ca_file.parent / "server.crt", ca_file.parent / "server.key"
    with pytest.raises(ValidationError, match="go together"):
        MqttSettings(ca_file=ca_file, cert_file=cert)
    with pytest.raises(ValidationError, match="needs TLS"):
        MqttSettings(cert_file=cert, key_file=key)
    assert MqttSettings(ca_file=ca_file, cert_file=cert, key_file=key).use_tls


def _agent_config(tmp_path: Path, mqtt: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'district = "mapo"\nagent_id = "mapo-1"\nledger = "{tmp_path}/l.csv"\n[mqtt]\n{mqtt}\n')
    return path


def test_agent_and_collector_exit_2_naming_the_setting(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AGENT__MQTT__PASSWORD", "pw")
    config = _agent_config(tmp_path, 'host = "broker.city.example"\nusername = "agent-mapo"')
    assert agent_cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "mqtt: Value error, refusing to send a password over plain TCP to broker.city.example" in err
    assert "pw" not in err.replace("password", "")

    collector = tmp_path / "collector.toml"
    collector.write_text('[mqtt]\nhost = "10.1.2.3"\nusername = "collector-1"\npassword = "pw"\n')
    assert collector_cli.main(["run", "--config", str(collector)]) == 2
    assert "refusing to send a password over plain TCP to 10.1.2.3" in capsys.readouterr().err


def test_the_secret_file_is_named_by_environment_as_in_a_container(tmp_path: Path, monkeypatch) -> None:
    """Compose and Kubernetes mount secrets as files under /run/secrets; the environment points at them."""
    secret = tmp_path / "run-secrets" / "mqtt_password"
    secret.parent.mkdir()
    secret.write_text("from-the-secrets-dir\n")
    monkeypatch.setenv("COLLECTOR__MQTT__USERNAME", "collector-1")
    monkeypatch.setenv("COLLECTOR__MQTT__PASSWORD_FILE", str(secret))
    from collector.config import CollectorSettings
    from common.settings import load

    settings = load(CollectorSettings, None)
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "from-the-secrets-dir"


def test_the_s3_secret_key_comes_from_a_secret_file(tmp_path: Path, monkeypatch) -> None:
    from agent.clips.settings import ClipBucketSettings

    secret = tmp_path / "s3_secret_key"
    secret.write_text("s3-secret\n")
    settings = ClipBucketSettings(access_key="AKIA1", secret_key_file=secret)
    assert settings.secret_key.get_secret_value() == "s3-secret"
    with pytest.raises(ValidationError, match="not both"):
        ClipBucketSettings(access_key="AKIA1", secret_key="x", secret_key_file=secret)
    with pytest.raises(ValidationError, match=r"given without s3\.access_key"):
        ClipBucketSettings(secret_key_file=secret)
