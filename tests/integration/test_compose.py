"""deploy/compose.yaml without Docker: its services, volumes and secrets; deploy/compose/setup.sh creates
every file it mounts; each CCTV service's configuration loads as its container would see it (its TOML file,
its environment, its secrets), and the broker accounts setup.sh made work against the production broker."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import AgentSettings
from collector.config import CollectorSettings
from common.settings import load
from common.signing import load_or_create_key, public_key_pem
from tests.mqtt_probe import Probe
from tests.secure_broker import SecureBroker

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DISTRICTS = ("mapo", "seodaemun", "jung")
CCTV = {"collector": CollectorSettings, **{f"agent-{d}": AgentSettings for d in DISTRICTS}}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What `deploy/compose/setup.sh` writes (as deploy/local/), run with this checkout's cctv-collector."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing")
    out = tmp_path_factory.mktemp("compose") / "local"
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "cctv-collector").write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'import sys; from collector.cli import main; "
        'sys.exit(main(sys.argv[1:]))\' "$@"\n'
    )
    (bin_dir / "cctv-collector").chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for _ in range(2):  # a second run keeps what exists
        done = subprocess.run([str(DEPLOY / "compose" / "setup.sh"), str(out)], env=env, capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    yield out


def test_the_stack_has_every_part(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    assert {"mosquitto", "s3", "postgres", "prometheus", "grafana", "collector"} <= services
    assert {f"agent-{d}" for d in DISTRICTS} | {f"camsim-{d}" for d in DISTRICTS} <= services


def test_dependencies_can_be_met(compose: dict[str, Any]) -> None:
    """Every dependency exists; one waited on as healthy has a healthcheck (its own or its image's), one
    waited on as completed is a one-shot job."""
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for other, condition in depends.items() if isinstance(depends, dict) else []:
            assert other in services, f"{name} depends on unknown {other}"
            target = services[other]
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in target or "build" in target, f"{other} has no healthcheck"
            if condition["condition"] == "service_completed_successfully":
                assert "restart" not in target, f"{other} is a one-shot job"
        if "network_mode" in service:
            assert service["network_mode"].removeprefix("service:") in services


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
        assert re.search(r":[^:]*\d", image), f"{name}: {image} has no version"


def test_every_volume_and_secret_is_declared_and_used(compose: dict[str, Any]) -> None:
    used_volumes, used_secrets = set(), set()
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith("."):
                used_volumes.add(source)
        used_secrets |= {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
    assert used_volumes == set(compose["volumes"])
    assert used_secrets == set(compose["secrets"])
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./local/secrets/"), secret


def test_cctv_services_are_read_only_and_keep_secrets_out_of_the_environment(compose: dict[str, Any]):
    for name in CCTV:
        service = compose["services"][name]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        for key, value in service.get("environment", {}).items():
            secretish = re.search(r"PASSWORD|SECRET|KEY$", key) and not key.endswith("_FILE")
            assert not secretish, f"{name}: {key} carries a secret in the environment"
            if re.search(r"(PASSWORD|KEY)_FILE$", key):
                assert value.startswith("/run/secrets/"), f"{name}: {key}={value}"


def test_setup_creates_every_file_the_stack_mounts(compose: dict[str, Any], local: Path) -> None:
    sources = [s["file"] for s in compose["secrets"].values()]
    for service in compose["services"].values():
        sources += [m.split(":")[0] for m in service.get("volumes", []) if m.startswith("./local/")]
    missing = [s for s in sources if not (local / s.removeprefix("./local/")).exists()]
    assert missing == []
    assert (local / "secrets").stat().st_mode & 0o077 == 0
    pem = public_key_pem(load_or_create_key(local / "secrets" / "command_key"))
    assert (local / "collector-commands.pem").read_bytes() == pem


@pytest.mark.parametrize("name", sorted(CCTV))
def test_each_service_loads_its_configuration_as_in_its_container(
    name: str, compose: dict[str, Any], local: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The TOML file, environment and secrets the service gets, with container paths mapped to the files
    setup.sh made: TLS on 8883, the district's own broker account and its password, the S3 secret."""
    service = compose["services"][name]
    mounts = _mounts(service, compose, local, tmp_path)
    (config_source,) = [
        src for src, dst in mounts.items() if dst.endswith(("/collector.toml", "/agent.toml"))
    ]
    toml = _remap(config_source.read_text(), mounts)
    for key, value in service.get("environment", {}).items():
        monkeypatch.setenv(key, _remap(str(value), mounts))
    (tmp_path / "service.toml").write_text(toml)
    settings = load(CCTV[name], tmp_path / "service.toml")
    mqtt = settings.mqtt
    assert mqtt.use_tls and mqtt.port == 8883 and mqtt.host == "mosquitto"
    account = "collector-1" if name == "collector" else name
    assert mqtt.username == account
    assert mqtt.password is not None
    assert mqtt.password.get_secret_value() == (local / "secrets" / "mqtt" / account).read_text().strip()
    assert (
        settings.s3.secret_key.get_secret_value() == (local / "secrets" / "s3_secret_key").read_text().strip()
    )
    if isinstance(settings, AgentSettings):
        assert settings.district == name.removeprefix("agent-")


def test_the_accounts_setup_made_open_the_production_broker(local: Path, tmp_path: Path) -> None:
    layout = {"config": local / "mosquitto", "certs": local / "tls", "secrets": local / "secrets" / "mqtt"}
    with SecureBroker(tmp_path, list(DISTRICTS), layout=layout).start() as broker:
        for account in ("collector-1", "agent-mapo", "agent-jung"):
            probe = Probe(broker.settings(account), f"probe-{account}")
            assert probe.connect() == 0, account
            probe.close()


def _mounts(service: dict[str, Any], compose: dict[str, Any], local: Path, tmp: Path) -> dict[Path, str]:
    """Host path -> container path of every bind mount and secret (named volumes: empty directories)."""
    mounts: dict[Path, str] = {}
    for mount in service.get("volumes", []):
        source, target = mount.split(":")[:2]
        if source.startswith("./local/"):
            host = local / source.removeprefix("./local/")
        elif source.startswith("./"):
            host = DEPLOY / source
        else:
            host = tmp / "volumes" / source
            host.mkdir(parents=True, exist_ok=True)
        mounts[host] = target
    for secret in service.get("secrets", []):
        source, target = (secret, secret) if isinstance(secret, str) else (secret["source"], secret["target"])
        mounts[local / compose["secrets"][source]["file"].removeprefix("./local/")] = f"/run/secrets/{target}"
    return mounts


def _remap(text: str, mounts: dict[Path, str]) -> str:
    for host, target in sorted(mounts.items(), key=lambda m: -len(m[1])):
        text = text.replace(target, str(host))
    return text


def test_prometheus_scrapes_every_cctv_service_and_its_config_checks(compose: dict[str, Any], tmp_path: Path):
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian prometheus) is missing")
    text = (DEPLOY / "compose" / "prometheus.yml").read_text()
    config = yaml.safe_load(text)
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    expected = {f"agent-{d}:9108" for d in DISTRICTS} | {"collector:9109"}
    assert targets == expected and expected <= {f"{s}:{p}" for s in compose["services"] for p in (9108, 9109)}
    mounted = text.replace("/etc/prometheus/alerts.yml", str(DEPLOY / "prometheus" / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(mounted)
    done = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
