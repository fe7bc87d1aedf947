"""Clips of past windows from recorded storage (ONVIF Profile G), end to end: camsim cameras and a recorder,
a running agent, the real broker and the Ceph S3 gateway. camsim burns the RECORDED time into each picture,
so a test reads which moment came back. Cameras listen on 127.63.0.x (the replay helper's range).

District: camera 1 records to its own storage (a Profile G personality), cameras 2 and 3 are on the recorder
`gangnam-nvr01` (camera 3 keeps only an hour), camera 4 has no recorded storage at all.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest

from agent.app import Agent
from agent.clips.manifest import verify
from agent.config import AgentSettings
from camsim.fleet import Fleet, FleetOptions, build_specs, recorder_spec
from camsim.font import read_text
from camsim.ledger import write_ledger, write_secrets
from camsim.media import MediaLibrary
from camsim.model import CameraSpec, StreamProfile
from camsim.recording import Archive, clock_text
from common.signing import load_or_create_key, public_key_pem
from contract import topics
from contract.codec import encode
from contract.messages import ArmRequest, ClipRequest
from tests.integration.conftest import Recorder, eventually, running
from tests.services import CephS3, Mosquitto, free_port
from tests.signed_commands import collector_key_file, signed

pytestmark = pytest.mark.integration

BASE_IP, NVR_IP, NVR = "127.63.0.1", "127.63.0.100", "gangnam-nvr01"
PROFILE = StreamProfile("recording", "/replay", "h264", 960, 540, 25, 25, 1000)  # quick to encode and decode
GAP_AGO_S, GAP_S = 600, 60  # camera 2 was down from 10 min ago for a minute


@dataclasses.dataclass
class District:
    directory: Path
    fleet: Fleet
    archive: Archive
    nvr: CameraSpec
    agent: Agent
    broker: Recorder
    client: Any
    bucket: str

    async def clip(self, camera: int, start: datetime, end: datetime) -> dict[str, Any]:
        """Request [start, end) of camera N over MQTT; its final ClipUpdate."""
        now = datetime.now(UTC)
        request = signed(ClipRequest(
            district="gangnam", request_id=f"req-{uuid.uuid4().hex[:12]}", camera_id=f"gangnam-{camera:05d}",
            start=start, end=end, purpose="robbery reported late", agency="police-112", priority="112",
            sent_at=now,
        ))  # fmt: skip
        delivery = encode(request)
        self.broker.client.publish(delivery.topic, delivery.payload, qos=1)
        topic = topics.clip("gangnam", request.request_id)

        def final() -> bool:
            return (self.broker.get(topic) or {}).get("status") in ("succeeded", "failed")

        await eventually(final, 30, "clip result")
        result = self.broker.get(topic)
        assert result is not None
        return result

    def fetch(self, result: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """The clip (saved locally) and its manifest from S3."""
        body = self.client.get_object(Bucket=self.bucket, Key=result["object_key"])["Body"].read()
        path = self.directory / f"{result['request_id']}.mp4"
        path.write_bytes(body)
        manifest = self.client.get_object(Bucket=self.bucket, Key=result["manifest_key"])["Body"].read()
        return path, json.loads(manifest)

    def verifies(self, path: Path, manifest: dict[str, Any]) -> bool:
        key_pem = public_key_pem(load_or_create_key(self.agent.settings.clips.key_file))
        return verify(path, manifest, key_pem) == []


def health_entries(broker: Recorder) -> dict[str, dict[str, Any]]:
    """The last health snapshot's camera entries, by camera id."""
    snapshot: dict[str, Any] = broker.get(topics.health("gangnam")) or {}
    return {entry["camera_id"]: entry for entry in snapshot.get("cameras", [])}


def shown_times(path: Path) -> list[str]:
    """The recorded time burned into each picture of a clip, in order."""
    shown = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            plane: Any = frame.to_ndarray(format="gray")
            h, w = plane.shape
            shown.append(read_text(plane, h // 50, w // 50, max(1, h // 135), 19))
    return shown


def whole(seconds_ago: float) -> datetime:
    """A whole second that far back (recordings have a keyframe every second)."""
    return datetime.fromtimestamp(int(datetime.now(UTC).timestamp() - seconds_ago), UTC)


def specs_and_archive() -> tuple[list[CameraSpec], CameraSpec, Archive]:
    options = FleetOptions("gangnam", 4, BASE_IP, free_port(), free_port())
    specs = build_specs(options)
    for spec in specs:
        spec.codec, spec.main_size, spec.gop = "h264", (640, 360), 25
        spec.personality = dataclasses.replace(spec.personality, h265_only=False, profile_g=False)
    specs[0].personality = dataclasses.replace(specs[0].personality, profile_g=True)
    nvr = recorder_spec(options, NVR, NVR_IP, specs[1:3])
    archive = Archive(profile=PROFILE)
    archive.record([*specs, nvr])
    now = int(archive.clock())
    archive.recordings["rec-gangnam-00002"].gaps = [(now - GAP_AGO_S, now - GAP_AGO_S + GAP_S)]
    archive.recordings["rec-gangnam-00003"].retention_s = 3600
    for recording in archive.recordings.values():  # no default outage near the windows these tests ask for
        recording.gaps = [g for g in recording.gaps if recording.source_id == "gangnam-00002"]
    return specs, nvr, archive


@pytest.fixture
async def district(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mosquitto: Mosquitto, ceph_s3: CephS3,
    s3_bucket: tuple[Any, str],
) -> AsyncIterator[District]:  # fmt: skip
    specs, nvr, archive = specs_and_archive()
    write_ledger(specs, tmp_path / "ledger.csv")
    write_ledger([nvr], tmp_path / "recorders.csv")
    write_secrets([*specs, nvr], tmp_path / "secrets.toml")
    media = MediaLibrary(tmp_path_factory.getbasetemp() / "clip-cache", loop_s=4.0)
    fleet = Fleet([*specs, nvr], media=media, archive=archive, wsd_port=free_port())
    client, bucket = s3_bucket
    settings = AgentSettings(
        district="gangnam", agent_id="gangnam-replay", ledger=tmp_path / "ledger.csv",
        secrets_file=tmp_path / "secrets.toml", metrics_port=0,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        health={"liveness_interval_s": 0.5, "stream_interval_s": 60, "snapshot_interval_s": 0.5},
        s3={"endpoint_url": ceph_s3.endpoint, "region": ceph_s3.region, "bucket": bucket,
            "access_key": ceph_s3.access_key, "secret_key": ceph_s3.secret_key},
        clips={"spool_dir": tmp_path / "spool", "key_file": tmp_path / "signing.key"},
        commands={"collector_public_keys": [collector_key_file(tmp_path)], "max_past_s": 3 * 3600},
        recorded={"recorders": tmp_path / "recorders.csv", "read_timeout_s": 1.5},
    )  # fmt: skip
    await fleet.start()
    broker = Recorder(mosquitto.port)
    agent = Agent(settings)
    try:
        async with running(agent, timeout_s=60):

            def reach_known() -> bool:
                entries = health_entries(broker)
                return any((c.get("recorded") or {}).get("via") == "recorder" for c in entries.values())

            await eventually(reach_known, 20, "recorded reach in the health report")
            yield District(tmp_path, fleet, archive, nvr, agent, broker, client, bucket)
    finally:
        broker.close()
        await fleet.stop()


async def test_a_window_twenty_minutes_ago_comes_back_from_the_recorder_as_recorded(
    district: District,
) -> None:
    start = whole(20 * 60)
    end = start + timedelta(seconds=3)
    result = await district.clip(2, start, end)
    assert (result["status"], result["source"], result.get("reason")) == ("succeeded", "recording", None), (
        result
    )
    path, manifest = district.fetch(result)
    shown = shown_times(path)
    expected = [clock_text(int(start.timestamp()) + s) for s in range(3)]
    assert shown[0] == expected[0] and shown[-1] == expected[-1], (shown[0], shown[-1])
    assert sorted(set(shown)) == expected  # every picture shows a moment of the window, none another
    assert manifest["source"] == "recording" and district.verifies(path, manifest)
    assert manifest["recording"]["device"] == NVR and manifest["recording"]["token"] == "rec-gangnam-00002"
    assert manifest["recording"]["time_base"] == "recorder_ntp"
    assert manifest["covered"]["complete"] and manifest["covered"]["time_source"] == "recording"
    assert "gaps" not in manifest["covered"]
    assert district.verifies(path, {**manifest, "recording": None}) is False  # the signature covers it


async def test_health_reports_recorded_reach_and_retention_per_camera(district: District) -> None:
    cameras = health_entries(district.broker)
    now = datetime.now(UTC)
    own, on_nvr, short = (cameras[f"gangnam-{n:05d}"]["recorded"] for n in (1, 2, 3))
    assert (own["via"], on_nvr["via"], short["via"]) == ("camera", "recorder", "recorder")
    assert own["reachable"] and on_nvr["reachable"] and short["reachable"]
    retention_h = (now - datetime.fromisoformat(short["earliest"])).total_seconds() / 3600
    assert 0.9 < retention_h <= 1.01  # camera 3's recordings go back one hour
    assert "recorded" not in cameras["gangnam-00004"]  # no recorded storage: nothing to report


async def test_a_window_the_preroll_holds_still_comes_from_the_preroll(district: District) -> None:
    arm = signed(ArmRequest(
        district="gangnam", request_id=f"arm-{uuid.uuid4().hex[:8]}", camera_id="gangnam-00001",
        duration_s=60, agency="police-112", sent_at=datetime.now(UTC),
    ))  # fmt: skip
    delivery = encode(arm)
    district.broker.client.publish(delivery.topic, delivery.payload, qos=1)
    pool = district.agent.clip_pool

    def buffered(seconds: float) -> bool:
        earliest = pool.earliest_buffered("gangnam-00001")
        return earliest is not None and earliest <= datetime.now(UTC) - timedelta(seconds=seconds)

    await eventually(lambda: buffered(3), 15, "three seconds of pre-roll")
    now = datetime.now(UTC)
    result = await district.clip(1, now - timedelta(seconds=2), now)
    assert (result["status"], result["source"]) == ("succeeded", "preroll"), result
    _, manifest = district.fetch(result)
    assert manifest["source"] == "preroll" and "recording" not in manifest


async def test_each_bad_window_or_recorder_gets_a_clear_result_and_never_another_time(
    district: District,
) -> None:
    nvr = district.nvr.faults
    gap_from, _ = district.archive.recordings["rec-gangnam-00002"].gaps[0]
    gap_start, past = datetime.fromtimestamp(gap_from, UTC), whole(900)
    results = {
        "older than retention": await district.clip(3, whole(2 * 3600), whole(2 * 3600 - 4)),
        "no recorded storage": await district.clip(4, whole(1200), whole(1196)),
        "across a gap": await district.clip(
            2, gap_start - timedelta(seconds=3), gap_start + timedelta(seconds=GAP_S + 3)
        ),
    }
    nvr.replay_refused = True
    results["refused"] = await district.clip(2, past, past + timedelta(seconds=3))
    nvr.replay_refused, nvr.replay_stall_after_s = False, 2
    results["stalled"] = await district.clip(2, past, past + timedelta(seconds=6))
    nvr.replay_stall_after_s, nvr.replay_time_shift_s = None, -3600
    results["another time"] = await district.clip(2, past, past + timedelta(seconds=3))
    nvr.replay_time_shift_s, nvr.search_stale_tokens = 0, True
    results["unknown token"] = await district.clip(2, past, past + timedelta(seconds=3))
    nvr.search_stale_tokens = False

    def reason(case: str) -> str:
        return str(results[case].get("reason"))

    assert {case: r["status"] for case, r in results.items()} == {
        "older than retention": "failed", "no recorded storage": "failed", "across a gap": "succeeded",
        "refused": "failed", "stalled": "succeeded", "another time": "failed", "unknown token": "failed",
    }  # fmt: skip
    assert "window older than the retention" in reason("older than retention")
    assert "pre-roll" in reason("no recorded storage") and "no recorder in the ledger" in reason(
        "no recorded storage"
    )
    assert "recorder refused replay" in reason("refused")
    assert "not the window asked" in reason("another time")
    assert "token does not exist" in reason("unknown token")
    assert reason("stalled").startswith("partial: replay stalled")
    assert reason("across a gap").startswith("partial: gap in the recording")
    registry = district.agent.metrics.registry  # each bad input counted by its reason
    outcomes = ("retention", "gap", "refused", "stalled", "other_time", "unknown_token")
    counted = {
        o: registry.get_sample_value("cctv_agent_recorded_requests_total", {"outcome": o}) for o in outcomes
    }
    assert counted == dict.fromkeys(outcomes, 1.0)
    assert registry.get_sample_value("cctv_agent_clip_requests_total", {"outcome": "no_source"}) == 1.0

    path, manifest = district.fetch(results["across a gap"])
    gap = {"start": gap_start, "end": gap_start + timedelta(seconds=GAP_S)}
    assert [{k: datetime.fromisoformat(v) for k, v in g.items()} for g in manifest["covered"]["gaps"]] == [
        gap
    ]
    assert not manifest["covered"]["complete"] and district.verifies(path, manifest)
    shown = set(shown_times(path))  # the pictures on both sides of the gap, nothing from inside it
    inside = {clock_text(int(gap_start.timestamp()) + s) for s in range(GAP_S)}
    assert len(shown) == 6 and not shown & inside

    path, manifest = district.fetch(results["stalled"])
    stalled = shown_times(path)  # the two seconds the recorder sent before it went silent
    assert sorted(set(stalled)) == [clock_text(int(past.timestamp()) + s) for s in range(2)]
    assert manifest["covered"]["end"] == (past + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
