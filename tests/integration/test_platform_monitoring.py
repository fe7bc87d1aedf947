"""Every panel of every dashboard against the real thing: a real Prometheus, with our rules, scraping a
running collector (`cctv-collector run`) and a district agent on simulated cameras, Mosquitto and the Ceph S3
gateway, while a 112 operator works an incident: clips of the nearest cameras delivered and played, and an
agency without rights refused. Then each panel's query must return data, as an operator opening the
dashboard expects.

The operator also watches one camera live until a segment is listed, so the live-view panels answer too."""

from __future__ import annotations

import json
import shutil
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import start_http_server

from camsim.model import CameraSpec
from tests.integration.platform_stack import (
    Stack,
    cameras_ready,
    clip_finished,
    decode,
    iso,
    platform_stack,
    simulated_district,
    wait_for,
)
from tests.services import CephS3, Mosquitto, Prometheus, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "dashboards").glob("*.json"))
BASE_IP = "127.65.0.1"  # ops-mon's loopback range
PREROLL_S = 3.0
# Panels that may rightly be empty in a short healthy run: firing alerts, rejected messages.
MAY_BE_EMPTY = {"Firing alerts", "Firing platform alerts", "Collector: rejected messages by reason"}


@pytest.fixture
async def mapo(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[list[CameraSpec]]:
    """Three H.264 cameras at the first three Mapo positions of the real camera data."""
    cache = tmp_path_factory.getbasetemp() / "clip-cache"
    async with simulated_district(tmp_path, "mapo", 3, BASE_IP, cache) as specs:
        yield specs


async def test_every_dashboard_panel_answers_from_a_stack_working_an_incident(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, mapo: list[CameraSpec]
) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is missing (Debian package prometheus)")
    async with platform_stack(
        tmp_path, mosquitto, ceph_s3, district="mapo",
        ledger=tmp_path / "ledger.csv", secrets=tmp_path / "secrets.toml",
    ) as stack:  # fmt: skip
        agent_port = free_port()
        agent_metrics, _ = start_http_server(agent_port, "127.0.0.1", stack.agent.metrics.registry)
        collector_port = tomllib.loads(stack.collector_config.read_text())["metrics_port"]
        jobs = {"cctv-agent": [f"127.0.0.1:{agent_port}"], "cctv-collector": [f"127.0.0.1:{collector_port}"]}
        try:
            with Prometheus().start(tmp_path / "prometheus", jobs, [RULES]) as prometheus:
                await wait_for(lambda: cameras_ready(stack, len(mapo)), 30, "the cameras online in the index")
                await wait_for(lambda: _scraped(prometheus), 20, "both targets scraped and up")
                await _work_an_incident(stack, mapo)
                await _check_every_panel(prometheus)
        finally:
            agent_metrics.shutdown()


async def _work_an_incident(stack: Stack, cameras: list[CameraSpec]) -> None:
    """A 112 operator's incident at the first camera: the two nearest cameras' clips from their pre-roll,
    delivered and played; the 119 centre refused on the 112 centre's incident."""
    police = stack.auth("police-112", "operator", "officer-kim")
    scene = cameras[0]
    opened = await stack.api.post("/v1/incidents", headers=police, json={
        "incident_no": "112-2026-1205-0142", "service": "112-video", "type": "assault",
        "lat": scene.lat, "lon": scene.lon, "occurred_at": iso(time.time() - 60), "radius_m": 1000,
        "purpose": "identify the assailant", "arm_nearest": 2,
    })  # fmt: skip
    assert opened.status_code == 201, opened.text
    incident = opened.json()["incident"]["incident_id"]
    armed = opened.json()["armed"]

    async def preroll_held() -> bool:
        pool = stack.agent.clip_pool
        since = [pool.earliest_buffered(camera_id) for camera_id in armed]
        return all(s is not None and s.timestamp() <= time.time() - PREROLL_S - 0.5 for s in since)

    await wait_for(preroll_held, 20, "the armed cameras' pre-roll")
    start = time.time() - PREROLL_S
    window = {"start": iso(start), "end": iso(start + PREROLL_S)}
    clips = f"/v1/incidents/{incident}/clips"
    asked = await stack.api.post(clips, headers=police, json={"nearest": 2, **window})
    assert asked.status_code == 202, asked.text
    refused = await stack.api.post(
        clips,
        headers=stack.auth("fire-119", "operator", "firefighter-lee"),
        json={"nearest": 1, **window},
    )
    assert refused.status_code == 403, refused.text
    async with httpx.AsyncClient(timeout=10) as viewer:
        for clip in asked.json()["clips"]:
            done = await wait_for(
                lambda c=clip["clip_id"]: clip_finished(stack, police, c), 20, clip["clip_id"]
            )
            assert done["state"] == "succeeded", done
            played = await viewer.get(done["playback"]["url"])
            assert played.status_code == 200 and decode(played.content)[0] > 0
    await _watch_live(stack, police, incident, scene.camera_id)


async def _watch_live(stack: Stack, police: dict[str, str], incident: str, camera_id: str) -> None:
    """A live view of the scene's camera, watched until its playlist lists a segment (it runs on: the live
    panels show it while they are checked)."""
    started = await stack.api.post(
        f"/v1/incidents/{incident}/live", headers=police, json={"camera_id": camera_id}
    )
    assert started.status_code == 201, started.text
    session = started.json()["session_id"]

    async def listed() -> bool:
        playlist = await stack.api.get(f"/v1/live/{session}/index.m3u8", headers=police)
        return playlist.status_code == 200 and "#EXTINF" in playlist.text

    await wait_for(listed, 20, "a live segment listed")


async def _check_every_panel(prometheus: Prometheus) -> None:
    """Each panel's queries are valid and, but for those that may rightly be empty, answer within 30 s."""
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            where = f"{path.name}: {panel['title']}"
            for target in panel["targets"]:
                query = target["expr"]
                prometheus.api("query", query=query)  # every query must be valid; raises otherwise
                if panel["title"] in MAY_BE_EMPTY:
                    continue

                async def answered(q: str = query) -> bool:
                    return bool(prometheus.api("query", query=q)["result"])

                await wait_for(answered, 30, f"{where}: {query}", every_s=0.5)


async def _scraped(prometheus: Prometheus) -> bool:
    targets = prometheus.api("targets")["activeTargets"]
    return {t["labels"]["job"]: t["health"] for t in targets} == {"cctv-agent": "up", "cctv-collector": "up"}
