"""The thin slice across every boundary, with the real commands: a simulated camera, `cctv-agent run`, a real
Mosquitto, `cctv-collector run` into SQLite, and `cctv-collector cameras --json` showing the camera."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.integration

BASE_IP = "127.54.0.1"
PORTS = ["--onvif-port", "18380", "--rtsp-port", "18854", "--wsd-port", "14002", "--control-port", "0"]
PORTS += ["--no-multicast", "--no-rtsp"]
ANSWERING = ("online", "degraded")


def command(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"{name}.cli", *args]


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Path]:
    outputs = [
        "--write-ledger",
        str(tmp_path / "ledger.csv"),
        "--secrets-out",
        str(tmp_path / "secrets.toml"),
    ]
    process = subprocess.Popen(
        command(
            "camsim", "run", "--district", "jongno", "--cameras", "2", "--base-ip", BASE_IP, *PORTS, *outputs
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _ready(process, timeout_s=60), "the simulator did not become ready"
        yield tmp_path
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(30)
    assert exit_code == 0


def _ready(process: subprocess.Popen[str], timeout_s: float) -> bool:
    """True once the simulator prints its ready line; False if it exits or does not say so in time."""
    assert process.stdout is not None
    watchdog = threading.Timer(timeout_s, process.kill)  # a stuck simulator ends the wait
    watchdog.start()
    try:
        return any(json.loads(line).get("event") == "ready" for line in process.stdout)
    finally:
        watchdog.cancel()


def write_configs(directory: Path, broker: Mosquitto) -> tuple[Path, Path]:
    collector = directory / "collector.toml"
    collector.write_text(
        f'metrics_port = 0\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[store]\nurl = "sqlite:///{directory}/index.db"\n[http]\nport = {free_port()}\n'
    )
    agent = directory / "agent.toml"
    agent.write_text(
        f'district = "jongno"\nagent_id = "jongno-1"\nledger = "{directory}/ledger.csv"\n'
        f'secrets_file = "{directory}/secrets.toml"\nmetrics_port = 0\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n[onvif]\ntimeout_s = 3.0\n'
        f'[clips]\nspool_dir = "{directory}/spool"\nkey_file = "{directory}/signing.key"\n'
    )
    return collector, agent


def indexed_cameras(collector_config: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        command("collector", "cameras", "--config", str(collector_config), "--json"),
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_a_simulated_camera_arrives_in_the_collector(simulator: Path, mosquitto: Mosquitto) -> None:
    collector_config, agent_config = write_configs(simulator, mosquitto)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = {name: (simulator / f"{name}.log").open("w") for name in ("collector", "agent")}
    collector = subprocess.Popen(
        command("collector", "run", "--config", str(collector_config)), stderr=logs["collector"], env=env
    )
    agent = subprocess.Popen(
        command("agent", "run", "--config", str(agent_config)), stderr=logs["agent"], env=env
    )
    try:
        deadline = time.monotonic() + 60
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = indexed_cameras(collector_config)
            if len(rows) == 2 and all(r["state"] in ANSWERING for r in rows):
                break
            time.sleep(0.3)
        assert [r["camera_id"] for r in rows] == ["jongno-00001", "jongno-00002"], rows
        assert {r["district"] for r in rows} == {"jongno"}
        # Both answer; a vendor personality below its safe firmware is reported degraded, not hidden.
        assert all(r["state"] in ANSWERING and r["manufacturer"] for r in rows), rows
    finally:
        agent.send_signal(signal.SIGTERM)
        agent_exit = agent.wait(60)
        collector.send_signal(signal.SIGTERM)
        collector_exit = collector.wait(60)
        for log in logs.values():
            log.close()
    assert (agent_exit, collector_exit) == (0, 0)
    # The agent logs through the redacting JSON formatter (tests/unit/test_jsonlog.py shows what it removes).
    lines = [json.loads(line) for line in (simulator / "agent.log").read_text().splitlines()]
    assert "connected to broker" in [line["msg"] for line in lines]
