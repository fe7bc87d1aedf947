"""The cctv-collector command line and HTTP API, as an operator uses them."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.cli import main
from collector.commands.signing import CommandSigner
from collector.index.store import Batch, open_store
from collector.index.store_sql import _migrations
from common.signing import key_id, load_public_key
from contract.codec import encode
from contract.messages import AnyMessage
from tests.collector.conftest import agent, api_headers, meta, start_collector_process, status, wait_until
from tests.services import Mosquitto


@pytest.fixture
def config(tmp_path: Path) -> Path:
    url = f"sqlite://{tmp_path / 'index.db'}"
    store = open_store(url)
    store.migrate()
    batch = Batch()
    messages: list[AnyMessage] = [
        agent(),
        meta("cam-1"),
        meta("cam-2", name="Yeoksam-ro 12"),
        status("cam-1", "online", 0),
        status("cam-2", "offline", 0, ["no_response"]),
        meta("cam-3", district="mapo", agent_id="agent-mapo"),
    ]
    for m in messages:
        batch.add(m)
    store.apply(batch)
    store.close()
    path = tmp_path / "collector.toml"
    path.write_text(f'[store]\nurl = "{url}"\n')
    return path


def test_validate_config_prints_key_paths_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nport = 70000\n[ingest]\nbatch_max = 0\nsurprise = 1\n")
    assert main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "mqtt.port: Input should be less than or equal to 65535" in err
    assert "ingest.batch_max:" in err
    assert "ingest.surprise: Extra inputs are not permitted" in err


def test_validate_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "collector.example.toml"
    assert main(["validate-config", str(example)]) == 0
    assert "OK" in capsys.readouterr().out


def test_cameras_json_filters_by_district_and_state(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["cameras", "--config", str(config), "--district", "gangnam", "--state", "offline", "--json"])
        == 0
    )
    [cam] = json.loads(capsys.readouterr().out)
    assert cam["camera_id"] == "cam-2"
    assert (cam["district"], cam["name"], cam["state"], cam["reasons"]) == (
        "gangnam",
        "Yeoksam-ro 12",
        "offline",
        ["no_response"],
    )
    assert (cam["manufacturer"], cam["model"]) == ("Hanwha", "XNO-6080R")
    assert cam["last_seen"].startswith("2026-03-02T09:00:00")
    assert cam["agent_online"] is True


def test_cameras_table(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cameras", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["camera", "district", "name", "state"]
    assert len(lines) == 4 and "mapo" in lines[3]


def test_uptime_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["uptime", "--config", str(config), "--district", "gangnam", "--since", "3650d", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    by_id = {c["camera_id"]: c for c in report["cameras"]}
    assert by_id["cam-1"]["availability"] == 1.0 and by_id["cam-2"]["availability"] == 0.0
    assert report["district_total"]["availability"] == pytest.approx(0.5)


def test_migrate_reports_the_schema_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTOR__STORE__URL", f"sqlite://{tmp_path / 'new.db'}")
    assert main(["migrate"]) == 0
    shipped = [version for version, _ in _migrations("sqlite")]
    assert f"schema version {shipped[-1]} (applied: {shipped})" in capsys.readouterr().out


def test_commands_public_key_prints_the_key_that_signs_commands(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["commands", "public-key", "--config", str(config)]) == 0
    pem = capsys.readouterr().out
    public = load_public_key(pem.encode())
    key_file = config.parent / "commands.key"  # by default beside the SQLite index
    signer = CommandSigner(key_file, ttl_s=60)
    assert key_id(public) == signer.key_id
    assert main(["commands", "public-key", "--config", str(config)]) == 0
    assert capsys.readouterr().out == pem  # created once, then kept


@pytest.mark.integration
def test_run_serves_api_and_metrics_and_drains_on_sigterm(tmp_path: Path, mosquitto: Mosquitto) -> None:
    proc, http_port, metrics_port = start_collector_process(tmp_path, mosquitto, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{http_port}/v1/healthz") is not None, what="healthz")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        for m in (agent(), status("cam-1", "offline", 1, ["no_response"])):
            d = encode(m)
            client.publish(d.topic, d.payload, qos=1, retain=d.retain).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
        url = f"http://127.0.0.1:{http_port}/v1/cameras?district=gangnam"
        headers = api_headers(tmp_path)
        wait_until(lambda: (_get(url, headers) or {}).get("count") == 1, what="the camera in the API")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'cctv_collector_received_messages_total{kind="camera_status"} 1.0' in text
        assert 'cctv_collector_cameras{district="gangnam",state="offline"} 1.0' in text
        assert 'cctv_collector_agent_online{district="gangnam"} 1.0' in text
        assert "cctv_collector_command_outbox_pending 0.0" in text  # the command outbox is wired in
        assert (tmp_path / "commands.key").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(url: str, headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as resp:  # noqa: S310 - http://127.0.0.1 only
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (OSError, ValueError):
        return None
