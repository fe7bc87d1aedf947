"""`cctv-agent healthcheck` and `cctv-collector healthcheck` on their own: what makes them fail (the live
processes are checked in tests/integration/test_secure_stack.py)."""

from __future__ import annotations

from pathlib import Path

from agent import cli as agent_cli
from agent.health_status import HealthFile, problems
from collector import cli as collector_cli
from collector.healthcheck import healthz_url
from collector.healthcheck import problems as collector_problems
from common.settings import load
from tests.services import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_agent_is_healthy_while_connected_and_observing(tmp_path: Path) -> None:
    clock = Clock()
    health = HealthFile(tmp_path / "health.json", clock)
    assert "no health file yet" in problems(health.path, 60, clock.now)[0]
    health.swept()
    health.observed(None)
    assert problems(health.path, 60, clock.now + 59) == []
    assert problems(health.path, 60, clock.now + 61) == [
        "no liveness round finished in the last 60 s (last 61 s ago)"
    ]
    health.observed("refused by the broker: Not authorized")
    assert problems(health.path, 60, clock.now) == ["refused by the broker: Not authorized"]


def test_the_agent_is_unhealthy_before_its_first_sweep(tmp_path: Path) -> None:
    health = HealthFile(tmp_path / "health.json", Clock())
    health.observed(None)
    assert problems(health.path, 60, Clock().now) == ["no sweep of the cameras finished yet"]
    health.path.write_text("{not json")
    assert "unreadable health file" in problems(health.path, 60, Clock().now)[0]


def test_the_health_file_lives_beside_the_spool_on_the_state_volume(tmp_path: Path) -> None:
    from agent.config import AgentSettings

    config = tmp_path / "agent.toml"
    config.write_text(
        f'district = "mapo"\nagent_id = "m"\nledger = "l.csv"\n[clips]\nspool_dir = "{tmp_path}/s"\n'
    )
    assert load(AgentSettings, config).status_file == tmp_path / "health.json"


def test_healthchecks_fail_when_nothing_runs(tmp_path: Path, capsys) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'district = "mapo"\nagent_id = "m"\nledger = "l.csv"\n[clips]\nspool_dir = "{tmp_path}/s"\n'
    )
    assert agent_cli.main(["healthcheck", "--config", str(config)]) == 1
    assert "no health file yet" in capsys.readouterr().err
    collector_config = tmp_path / "collector.toml"
    collector_config.write_text(f"[http]\nport = {free_port()}\n")
    assert collector_cli.main(["healthcheck", "--config", str(collector_config)]) == 1
    assert "unhealthy: the API does not answer" in capsys.readouterr().err
    assert agent_cli.main(["healthcheck", "--config", str(tmp_path / "missing.toml")]) == 2
    assert collector_cli.main(["healthcheck", "--config", str(tmp_path / "missing.toml")]) == 2


def test_the_collector_check_names_what_is_wrong() -> None:
    status = {"ok": False, "mqtt_subscribed": True, "writer_alive": True, "store_ok": False,
              "store_error": "connection refused", "ingest_stalled": True, "queue_depth": 12}  # fmt: skip
    assert collector_problems(status) == [
        "the index store is failing",
        "ingest stalled: 12 messages wait, nothing committed",
        "store error: connection refused",
    ]
    healthy = {"ok": True, "mqtt_subscribed": True, "writer_alive": True, "store_ok": True}
    assert collector_problems(healthy) == []


def test_a_collector_listening_everywhere_is_asked_on_loopback(tmp_path: Path) -> None:
    from collector.config import CollectorSettings

    config = tmp_path / "c.toml"
    config.write_text('[http]\nhost = "0.0.0.0"\nport = 8080\n')
    assert healthz_url(load(CollectorSettings, config)) == "http://127.0.0.1:8080/v1/healthz"
