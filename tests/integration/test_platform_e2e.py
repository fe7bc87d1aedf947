"""The platform end to end on real parts, as a 112 operator uses it: a token, an incident at a real place in
Gangnam, the cameras around it, clips of the nearest two from their pre-roll, played through presigned
URLs from the Ceph S3 gateway, and every step on record: the collector's audit trail (which `audit verify`
vouches for) and the district's own provision ledger."""

from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from camsim.model import CameraSpec
from collector.index.spatial import bearing_deg, haversine_m
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
from tests.services import CephS3, Mosquitto

pytestmark = pytest.mark.integration

BASE_IP = "127.44.0.1"
PREROLL_S, WINDOW_S = 3.0, 3.0  # the window starts 3 s before the request: only the pre-roll has it


@pytest.fixture
async def gangnam(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[CameraSpec]]:
    """Three cameras at the first three Gangnam positions of the real camera data, 40 m and 900 m apart."""
    cache = tmp_path_factory.getbasetemp() / "clip-cache"
    async with simulated_district(tmp_path, "gangnam", 3, BASE_IP, cache) as specs:
        yield specs


@pytest.fixture
async def stack(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, gangnam: list[CameraSpec]
) -> AsyncIterator[Stack]:
    async with platform_stack(
        tmp_path, mosquitto, ceph_s3, district="gangnam",
        ledger=tmp_path / "ledger.csv", secrets=tmp_path / "secrets.toml",
    ) as running:  # fmt: skip
        await wait_for(lambda: cameras_ready(running, len(gangnam)), 30, "the cameras online in the index")
        yield running


async def test_a_112_operator_gets_playable_verified_clips_of_the_nearest_cameras(
    stack: Stack, gangnam: list[CameraSpec]
) -> None:
    police = stack.auth("police-112", "operator", "officer-kim")
    scene, near, far = gangnam
    opened = await stack.api.post("/v1/incidents", headers=police, json={
        "incident_no": "112-2026-1205-0007", "service": "112-video", "type": "assault",
        "lat": scene.lat, "lon": scene.lon, "occurred_at": iso(time.time() - 60), "radius_m": 1000,
        "purpose": "identify the assailant", "arm_nearest": 2,
    })  # fmt: skip
    assert opened.status_code == 201, opened.text
    incident = opened.json()["incident"]["incident_id"]
    assert opened.json()["armed"] == [scene.camera_id, near.camera_id]

    listed = await stack.api.get(f"/v1/incidents/{incident}/cameras", headers=police)
    assert listed.status_code == 200, listed.text
    cameras = listed.json()["cameras"]
    assert [c["camera_id"] for c in cameras] == [scene.camera_id, near.camera_id, far.camera_id]
    for camera, spec in zip(cameras, gangnam, strict=True):
        assert camera["distance_m"] == pytest.approx(
            haversine_m(scene.lat, scene.lon, spec.lat, spec.lon), abs=0.5
        )
        assert (camera["district"], camera["state"], camera["agent_online"]) == ("gangnam", "online", True)
    assert cameras[1]["bearing_deg"] == pytest.approx(
        bearing_deg(scene.lat, scene.lon, near.lat, near.lon), abs=0.5
    )

    # The arms reached the agent: both cameras' pre-roll reaches back before the window.
    def buffered_since(camera_id: str) -> float:
        earliest = stack.agent.clip_pool.earliest_buffered(camera_id)
        return earliest.timestamp() if earliest is not None else float("inf")

    async def preroll_held() -> bool:
        return all(
            buffered_since(c) <= time.time() - PREROLL_S - 0.5 for c in (scene.camera_id, near.camera_id)
        )

    await wait_for(preroll_held, 20, "the armed cameras' pre-roll")
    start = time.time() - PREROLL_S
    window = {"start": iso(start), "end": iso(start + WINDOW_S)}
    asked = await stack.api.post(
        f"/v1/incidents/{incident}/clips", headers=police, json={"nearest": 2, **window}
    )
    assert asked.status_code == 202, asked.text
    clip_ids = [c["clip_id"] for c in asked.json()["clips"]]
    assert [c["camera_id"] for c in asked.json()["clips"]] == [scene.camera_id, near.camera_id]

    async with httpx.AsyncClient(timeout=10) as viewer:  # no token: the presigned URL is the credential
        for clip_id in clip_ids:
            clip = await wait_for(
                functools.partial(clip_finished, stack, police, clip_id), 20, clip_id, every_s=0.2
            )
            assert clip["state"] == "succeeded", clip
            assert clip["manifest_verified"] is True, clip
            assert clip["source"] == "preroll"
            video = await viewer.get(clip["playback"]["url"])
            assert video.status_code == 200
            frames, duration = decode(video.content)
            assert frames > 0
            assert duration == pytest.approx(WINDOW_S, abs=1.1)  # from the keyframe at or before start
            thumbnail = await viewer.get(clip["playback"]["thumbnail_url"])
            assert (thumbnail.status_code, thumbnail.content[:2]) == (200, b"\xff\xd8")
            for forged in _tampered(clip["playback"]["url"], clip["playback"]["thumbnail_url"]):
                assert (await viewer.get(forged)).status_code == 403

    auditor = stack.auth("audit-office", "auditor", "auditor-lee")
    trail = await stack.api.get("/v1/audit", params={"limit": 1000}, headers=auditor)
    assert trail.status_code == 200, trail.text
    records = [e["record"] for e in trail.json()["entries"] if e["record"]["incident"] == incident]
    done = [(r["action"], r["result"], r["account"], r["purpose"]) for r in records]
    for action, times in (
        ("cameras.nearby", 2),
        ("clip.request", 2),
        ("clip.playback", 2),
        ("clip.thumbnail", 2),
    ):
        assert done.count((action, "allowed", "officer-kim", "identify the assailant")) == times, done
    requested = {s["camera_id"]: s for r in records if r["action"] == "clip.request" for s in r["subjects"]}
    assert set(requested) == {scene.camera_id, near.camera_id}
    assert requested[scene.camera_id]["start"] == pytest.approx(
        start, abs=0.01
    )  # the subject's place and time
    verified = await stack.collector_cli("audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    exported = await stack.agent_cli("ledger", "export")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert sorted(r["request_id"] for r in rows) == sorted(clip_ids)
    for row in rows:
        assert (row["agency"], row["requested_by"], row["incident"], row["purpose"]) == (
            "police-112", "officer-kim", incident, "identify the assailant",
        )  # fmt: skip


def _tampered(url: str, other: str) -> list[str]:
    """The URL with its lifetime stretched to a week, and its signature on another object."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    stretched = urlunsplit(parts._replace(query=urlencode({**query, "X-Amz-Expires": "604800"})))
    moved = urlunsplit(urlsplit(other)._replace(query=parts.query))
    return [stretched, moved]
