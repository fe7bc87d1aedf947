"""The real agent and collector, as processes, behind the production broker (TLS, their own accounts, the
generated ACL): the agent's camera reaches the collector's index, and the container healthchecks
(`cctv-agent healthcheck`, `cctv-collector healthcheck`) say healthy, then unhealthy once the broker is gone.
Configuration as a container gets it: a file, environment variables, and secrets as files."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collector.index.store import open_store
from tests.collector.conftest import start_collector_process
from tests.integration.conftest import camera_fixture, eventually
from tests.secure_broker import SecureBroker
from tests.signed_commands import collector_key_file

pytestmark = pytest.mark.integration
BASE_IP = "127.64.0.1"
camera = camera_fixture(BASE_IP)


def _argv(program: str, *args: str) -> list[str]:
    """`cctv-agent ARGS` or `cctv-collector ARGS` with this checkout's code."""
    return [
        sys.executable,
        "-c",
        f"import sys; from {program}.cli import main; sys.exit(main(sys.argv[1:]))",
        *args,
    ]


def _cli(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(program, *args), capture_output=True, text=True, timeout=30, check=False)


async def _health(program: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, program, "healthcheck", "--config", str(config), *args)


def _agent_config(directory: Path, broker: SecureBroker) -> Path:
    """The agent's file; its broker password comes from a secret file, named in the environment."""
    path = directory / "agent.toml"
    path.write_text(
        f'district = "gangnam"\nagent_id = "gangnam-secure"\nledger = "{directory / "ledger.csv"}"\n'
        f'secrets_file = "{directory / "secrets.toml"}"\nmetrics_port = 0\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "agent-gangnam"\n'
        f'ca_file = "{broker.ca_file}"\nreconnect_max_s = 1\n'
        f"[health]\nliveness_interval_s = 0.5\nstream_interval_s = 60\n"
        f'[clips]\nspool_dir = "{directory / "state" / "spool"}"\nkey_file = "{directory / "state" / "k"}"\n'
        f'[commands]\ncollector_public_keys = ["{collector_key_file(directory)}"]\n'
    )
    return path


def _start_agent(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(_argv("agent", "run", "--config", str(config)))


@pytest.fixture
async def stack(
    camera: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SecureBroker, Path, Path, Path]]:
    """Broker, collector and agent running; yields the broker, both config files and the collector's dir."""
    broker = SecureBroker(camera / "broker", ["gangnam", "mapo"]).start()
    monkeypatch.setenv("COLLECTOR__MQTT__USERNAME", "collector-1")
    monkeypatch.setenv("COLLECTOR__MQTT__PASSWORD_FILE", str(broker.password_file("collector-1")))
    monkeypatch.setenv("COLLECTOR__MQTT__CA_FILE", str(broker.ca_file))
    monkeypatch.setenv("AGENT__MQTT__PASSWORD_FILE", str(broker.password_file("agent-gangnam")))
    collector_dir = camera / "collector"
    collector_dir.mkdir()
    collector, _, _ = start_collector_process(collector_dir, broker)  # type: ignore[arg-type]
    agent_config = _agent_config(camera, broker)
    agent = _start_agent(agent_config)
    try:
        yield broker, agent_config, collector_dir / "collector.toml", collector_dir
    finally:
        for proc in (agent, collector):
            proc.send_signal(signal.SIGTERM)
        for proc in (agent, collector):
            await asyncio.to_thread(proc.wait, 30)
        broker.stop()


async def test_agent_and_collector_work_under_the_acl_and_report_their_health(
    stack: tuple[SecureBroker, Path, Path, Path],
) -> None:
    broker, agent_config, collector_config, collector_dir = stack
    collector_ok = await _until("collector", collector_config, 0)
    assert collector_ok.stdout.strip() == "healthy"
    store = open_store(f"sqlite://{collector_dir / 'run.db'}")
    try:
        await eventually(lambda: bool(store.cameras("gangnam")), 20, "the agent's camera in the index")
        assert [c.state for c in store.cameras("gangnam")] in (["online"], ["degraded"])
    finally:
        store.close()
    agent_ok = await _until("agent", agent_config, 0)
    assert agent_ok.stdout.strip() == "healthy"

    broker.stop()
    agent_down = await _until("agent", agent_config, 1)
    assert "not connected to the broker" in agent_down.stderr
    collector_down = await _until("collector", collector_config, 1)
    assert "not subscribed at the broker" in collector_down.stderr


async def _until(
    program: str, config: Path, code: int, timeout_s: float = 20
) -> subprocess.CompletedProcess[str]:
    """The healthcheck's answer once it exits with `code` (the agent rewrites its health every round)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        done = await _health(program, config)
        if done.returncode == code:
            return done
        if loop.time() > deadline:
            raise AssertionError(f"{program} healthcheck: exit {done.returncode}, not {code}: {done.stderr}")
        await asyncio.sleep(0.2)
