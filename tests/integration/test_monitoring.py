"""The alert rules and the dashboards against the real thing: promtool's checks and unit tests, the
dashboards' shape, then a real Prometheus scraping a running agent (on a simulated district with cameras in
every state) and a running collector, evaluating every rule and computing the district's availability. Every
dashboard panel's query is answered in test_platform_monitoring.py, on a stack working an incident."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import start_http_server

from agent.app import Agent
from camsim.fleet import Fleet
from tests.collector.conftest import start_collector_process, wait_until
from tests.integration.conftest import agent_settings, eventually, running
from tests.services import Mosquitto, Prometheus, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "dashboards").glob("*.json"))
AVAILABILITY = "cctv:district_camera_availability:ratio"
DIAGNOSTICS = (
    "up",
    "cctv_agent_mqtt_connected",
    "cctv_agent_cameras",
    "cctv_collector_mqtt_connected",
    "cctv_collector_written_messages_total",
    "cctv_collector_rejected_messages_total",
    "cctv_collector_cameras",
)


def _needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is missing (Debian package prometheus)")


def test_rules_pass_promtool_checks_and_unit_tests() -> None:
    _needs("promtool")
    for args in (["check", "rules", RULES.name], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            ["promtool", *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_dashboards_are_well_formed() -> None:
    dashboards = [json.loads(path.read_text()) for path in DASHBOARDS]
    uids = [d["uid"] for d in dashboards]
    assert len(uids) == len(set(uids)) and {"cctv-share-uptime", "cctv-share-platform"} <= set(uids)
    for dashboard in dashboards:
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{dashboard['uid']}: panel ids must be unique"
        assert all(p["targets"] and all(t["expr"].strip() for t in p["targets"]) for p in dashboard["panels"])
        refs = [[t["refId"] for t in p["targets"]] for p in dashboard["panels"]]
        assert all(len(r) == len(set(r)) for r in refs), f"{dashboard['uid']}: refIds repeat in a panel"


async def test_prometheus_evaluates_every_rule_and_the_availability_on_live_metrics(
    district: tuple[Fleet, Path], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    _needs("prometheus")
    _fleet, directory = district
    agent = Agent(agent_settings(directory, mosquitto))
    agent_port = free_port()
    agent_metrics, _ = start_http_server(agent_port, "127.0.0.1", agent.metrics.registry)
    collector, collector_port = _start_collector(tmp_path, mosquitto)
    try:
        async with running(agent):
            with Prometheus().start(
                tmp_path / "prometheus",
                jobs={
                    "cctv-agent": [f"127.0.0.1:{agent_port}"],
                    "cctv-collector": [f"127.0.0.1:{collector_port}"],
                },
                rule_files=[RULES],
            ) as prometheus:

                def availability_known() -> bool:
                    return bool(prometheus.api("query", query=AVAILABILITY)["result"])

                def both_scraped() -> bool:
                    targets = prometheus.api("targets")["activeTargets"]
                    health = {t["labels"]["job"]: t["health"] for t in targets}
                    return health == {"cctv-agent": "up", "cctv-collector": "up"}

                try:
                    await eventually(availability_known, 60, "the district's availability in Prometheus")
                except AssertionError as exc:  # say which link of agent -> broker -> collector broke
                    seen = {q: prometheus.api("query", query=q)["result"] for q in DIAGNOSTICS}
                    raise AssertionError(f"{exc}; Prometheus saw {seen}") from None
                await eventually(both_scraped, 20, "both targets scraped and up")
                rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
                text = RULES.read_text()
                assert len(rules) == text.count("- alert:") + text.count("- record:")
                assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
                [ratio] = prometheus.api("query", query=AVAILABILITY)["result"]
                assert ratio["metric"]["district"] == "gangnam"
                assert 0 < float(ratio["value"][1]) < 1  # the simulated district has cameras in every state
    finally:
        agent_metrics.shutdown()
        collector.terminate()
        collector.wait(30)


def _start_collector(tmp_path: Path, broker: Mosquitto) -> tuple[subprocess.Popen[bytes], int]:
    proc, _http_port, metrics_port = start_collector_process(tmp_path, broker)
    wait_until(lambda: _answers(f"http://127.0.0.1:{metrics_port}/metrics"), what="the collector's metrics")
    return proc, metrics_port


def _answers(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
            return resp.status == 200
    except OSError:
        return False
