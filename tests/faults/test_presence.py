"""Presence under faults: a killed or frozen agent shows offline in the collector within the keepalive bound
and its cameras stop looking current; a restarted agent wins with its new session; a broker that loses its
data gets the agent's retained state back, and the collector with it. Real Mosquitto, camsim, the agent and
`cctv-collector run`."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.app import Agent
from camsim.fleet import Fleet
from contract import topics
from tests.collector.conftest import api_headers, start_collector_process
from tests.integration.conftest import Recorder, agent_settings, eventually, running
from tests.services import Mosquitto

KEEPALIVE_S = 5
# Mosquitto 2.0 keeps time in whole seconds (src/keepalive.c): a client may be dropped once more than
# keepalive * 3 // 2 s passed since the second of its last packet (at most keepalive * 3 // 2 + 1 s after
# it), and the broker looks only every 6 s (`last_check + 5 < now`); +1 s for its loop to come round. A frozen
# agent's will comes at most this long after its last packet: 15 s for a keepalive of 5 s (measured
# 11.6-11.9 s). A killed agent's connection closes at once, and its will comes at once.
MOSQUITTO_KEEPALIVE_CHECK_S = 6
WILL_BOUND_S = KEEPALIVE_S * 3 // 2 + 1 + MOSQUITTO_KEEPALIVE_CHECK_S + 1
# From the will's delivery until the API shows the agent offline: the collector receives it with the test's
# subscriber and commits it within its ingest batch window (50 ms); the rest is its turn at a loaded CI
# machine's two cores, which it shares with the test, the fleet and the broker.
INGEST_BOUND_S = 5.0
DISTRICT_CAMERAS = 12


class Collector:
    """`cctv-collector run` as a user reaches it: the HTTP API and the metrics page."""

    def __init__(self, directory: Path, broker: Mosquitto) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.proc, self.http_port, self.metrics_port = start_collector_process(directory, broker)
        self.headers = api_headers(directory)

    async def _get(self, port: int, path: str) -> str | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(f"http://127.0.0.1:{port}{path}", headers=self.headers) as resp,
            ):
                return await resp.text() if resp.status == 200 else None
        except aiohttp.ClientError:
            return None

    async def cameras(self) -> dict[str, dict[str, Any]]:
        body = await self._get(self.http_port, "/v1/cameras?district=gangnam")
        return {} if body is None else {c["camera_id"]: c for c in json.loads(body)["cameras"]}

    async def gauge(self, name: str, labels: dict[str, str]) -> float | None:
        body = await self._get(self.metrics_port, "/metrics") or ""
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def collector(directory: Path, broker: Mosquitto) -> Iterator[Collector]:
    c = Collector(directory, broker)
    try:
        yield c
    finally:
        c.stop()


@contextmanager
def agent_process(directory: Path, broker: Mosquitto, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m agent.cli run` for the simulated district, with a short keepalive; killed on the way out."""
    config = directory / "agent.toml"
    if not config.exists():
        config.write_text(
            'district = "gangnam"\nagent_id = "gangnam-test"\n'
            f'ledger = "{directory / "ledger.csv"}"\nsecrets_file = "{directory / "secrets.toml"}"\n'
            "metrics_port = 0\n"
            f'[clips]\nspool_dir = "{directory / "spool"}"\nkey_file = "{directory / "signing.key"}"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive_s = {KEEPALIVE_S}\n'
            "reconnect_max_s = 1\n[onvif]\ntimeout_s = 2.0\n"
            "[health]\nliveness_interval_s = 0.5\nsnapshot_interval_s = 1.0\nstream_interval_s = 2.0\n"
        )
    with (directory / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)], stderr=log, stdout=log
        )
        try:
            yield proc
        finally:
            proc.kill()  # also ends a stopped process
            proc.wait()


def presences(recorder: Recorder) -> list[tuple[str, int]]:
    """(state, session) of every agent presence the broker delivered, in order."""
    prefix = topics.agent_state("gangnam").encode() + b" "
    return [
        (p["state"], p["session"])
        for p in (json.loads(raw[len(prefix) :]) for raw in list(recorder.raw) if raw.startswith(prefix))
    ]


async def all_cameras(c: Collector, predicate: Any) -> bool:
    cams = await c.cameras()
    return len(cams) == DISTRICT_CAMERAS and all(predicate(cam) for cam in cams.values())


async def until(check: Any, timeout_s: float, what: str) -> None:
    """Like `eventually`, for an async check (the camsim fleet runs on this event loop: never block it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


def reported(cam: dict[str, Any]) -> bool:
    return bool(cam["agent_online"]) and cam["state"] != "unknown"


def dark(cam: dict[str, Any]) -> bool:
    return cam["agent_online"] is False and (cam["state"], cam["reasons"]) == ("unknown", ["agent_offline"])


def will_delivered(recorder: Recorder, before: int) -> bool:
    """The broker delivered an `offline` presence (the agent's will) after the first `before` presences."""
    return "offline" in [state for state, _ in presences(recorder)[before:]]


async def assert_dark_within_bound(c: Collector, recorder: Recorder, before: int, since: float) -> None:
    """The broker publishes the agent's will (a presence after the first `before`) within the keepalive bound
    of `since` (the agent's last moment), then the collector shows the agent offline and its cameras as not
    current within the ingest bound. Each wait is for its own event: a late broker round (Mosquitto's 6 s
    cadence) does not eat the collector's allowance, nor a busy collector the broker's."""
    loop = asyncio.get_running_loop()
    await eventually(
        lambda: will_delivered(recorder, before), WILL_BOUND_S - (loop.time() - since), "the will"
    )
    await until(lambda: all_cameras(c, dark), INGEST_BOUND_S, "cameras shown dark after the will")
    assert await c.gauge("cctv_collector_agent_online", {"district": "gangnam"}) == 0
    unknown = {"district": "gangnam", "state": "unknown"}
    assert await c.gauge("cctv_collector_cameras", unknown) == DISTRICT_CAMERAS


async def test_a_killed_agent_shows_offline_and_its_restart_wins(
    district: tuple[Fleet, Path], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    _, directory = district
    recorder = Recorder(mosquitto.port)
    try:
        with collector(tmp_path / "collector", mosquitto) as c:
            with agent_process(directory, mosquitto, "first") as first:
                await until(lambda: all_cameras(c, reported), 30, "the district's cameras in the collector")
                before = len(presences(recorder))
                first.send_signal(signal.SIGKILL)
                killed_at = asyncio.get_running_loop().time()
                await assert_dark_within_bound(c, recorder, before, killed_at)
            with agent_process(directory, mosquitto, "second"):
                await until(lambda: all_cameras(c, reported), 30, "the restarted agent's cameras")
                assert await c.gauge("cctv_collector_agent_online", {"district": "gangnam"}) == 1
    finally:
        recorder.close()
    (online_1, session_1), (will, will_session), (online_2, session_2) = presences(recorder)[:3]
    assert (online_1, will, online_2) == ("online", "offline", "online")
    assert will_session == session_1 < session_2  # the will spoke for its own connection, the restart won


async def test_a_frozen_agent_shows_offline_within_the_keepalive_bound(
    district: tuple[Fleet, Path], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """An agent that stops answering (hung, or its link cut) sends no FIN: only the keepalive reveals it."""
    _, directory = district
    recorder = Recorder(mosquitto.port)
    try:
        with (
            collector(tmp_path / "collector", mosquitto) as c,
            agent_process(directory, mosquitto, "agent") as proc,
        ):
            await until(lambda: all_cameras(c, reported), 30, "the district's cameras in the collector")
            before = len(presences(recorder))
            proc.send_signal(signal.SIGSTOP)
            await assert_dark_within_bound(c, recorder, before, asyncio.get_running_loop().time())
            proc.send_signal(signal.SIGCONT)  # back: it finds its connection closed and connects anew
            await until(lambda: all_cameras(c, reported), 20, "the agent back online")
    finally:
        recorder.close()


async def test_state_is_restored_after_the_broker_loses_its_data(
    district: tuple[Fleet, Path], mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet, directory = district
    agent = Agent(agent_settings(directory, mosquitto))

    def agent_view() -> dict[str, tuple[object, ...]]:
        """Each camera's state and reasons, and what its meta says (health snapshots do not carry meta)."""
        view: dict[str, tuple[object, ...]] = {}
        for record in agent.registry.records.values():
            s, m = agent.registry.status(record), agent.registry.meta(record)
            names = (m.name, m.manufacturer, m.model) if m else ("", "", "")
            view[s.camera_id] = (s.state, list(s.reasons), *names)
        return view

    async def matches(c: Collector) -> bool:
        cams = await c.cameras()
        shown = {
            cid: (cam["state"], cam["reasons"], cam["name"], cam["manufacturer"], cam["model"])
            for cid, cam in cams.items()
        }
        return shown == agent_view() and all(cam["agent_online"] for cam in cams.values())

    async with running(agent):
        with collector(tmp_path / "before", mosquitto) as before:
            await until(lambda: matches(before), 30, "the collector to show what the agent holds")
            # The broker dies and comes back empty: no retained message, no session.
            mosquitto.kill()
            shutil.rmtree(mosquitto.directory / "data", ignore_errors=True)
            for db in mosquitto.directory.rglob("*.db"):
                db.unlink()
            mosquitto.start(mosquitto.directory, mosquitto.port)
            await eventually(lambda: agent.link.connected, 10, "the agent reconnected")
            # A camera changes after the restart: the running collector must have subscribed again.
            camera = fleet.specs[0]
            camera.faults.offline = True
            fleet.kick()
            await eventually(lambda: agent_view()[camera.camera_id][0] == "offline", 10, "camera 1 offline")
            # A collector with an empty index learns everything from the retained state the agent republished.
            monkeypatch.setenv("COLLECTOR__COLLECTOR_ID", "collector-new")
            with collector(tmp_path / "new", mosquitto) as new:
                await until(lambda: matches(new), 30, "a new collector to rebuild from retained state")
            await until(lambda: matches(before), 10, "the running collector to follow")
