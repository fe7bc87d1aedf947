"""The golden-time path end to end: a 112 clip request over the real broker to a running agent, cut from a
simulated camera's RTSP stream, in the real Ceph S3 gateway, playable, with a hash and a signed manifest that
verify."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.clips.manifest import verify
from agent.config import AgentSettings
from common.signing import load_or_create_key, public_key_pem
from contract import topics
from contract.codec import encode
from contract.messages import ClipRequest
from tests.integration.conftest import (
    Recorder,
    assert_documented,
    camera_fixture,
    eventually,
    running,
)
from tests.services import CephS3, Mosquitto
from tests.signed_commands import collector_key_file, signed

pytestmark = pytest.mark.integration

BASE_IP, ONVIF_PORT, RTSP_PORT, WSD_PORT = "127.53.0.1", 18280, 18754, 13902


camera = camera_fixture(BASE_IP, (ONVIF_PORT, RTSP_PORT))


async def test_a_112_request_becomes_a_verified_clip_in_s3(
    camera: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[object, str]
) -> None:
    client, bucket = s3_bucket
    settings = AgentSettings(
        district="gangnam",
        agent_id="gangnam-e2e",
        ledger=camera / "ledger.csv",
        secrets_file=camera / "secrets.toml",
        metrics_port=0,
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        health={"liveness_interval_s": 0.5, "stream_interval_s": 60},
        s3={
            "endpoint_url": ceph_s3.endpoint,
            "region": ceph_s3.region,
            "bucket": bucket,
            "access_key": ceph_s3.access_key,
            "secret_key": ceph_s3.secret_key,
        },
        clips={"spool_dir": camera / "spool", "key_file": camera / "signing.key"},
        commands={"collector_public_keys": [collector_key_file(camera)]},
    )
    recorder = Recorder(mosquitto.port)
    agent = Agent(settings)
    camera_id = "gangnam-00001"
    try:
        async with running(agent, timeout_s=60):
            status_topic = topics.camera_status("gangnam", camera_id)
            await eventually(
                lambda: (recorder.get(status_topic) or {}).get("state") == "online", 20, "camera online"
            )
            now = datetime.now(UTC)
            request = signed(ClipRequest(
                district="gangnam",
                request_id=f"req-{uuid.uuid4().hex[:12]}",
                camera_id=camera_id,
                start=now + timedelta(seconds=1),
                end=now + timedelta(seconds=4),
                purpose="assault in progress",
                agency="police-112",
                incident="112-20261125-0001",
                priority="112",
                sent_at=now,
            ))  # fmt: skip
            delivery = encode(request)
            recorder.client.publish(delivery.topic, delivery.payload, qos=1)
            result_topic = topics.clip("gangnam", request.request_id)
            await eventually(
                lambda: (recorder.get(result_topic) or {}).get("status") in ("succeeded", "failed"),
                40,
                "clip result",
            )
            result = recorder.get(result_topic)
            assert result is not None and result["status"] == "succeeded", result
            assert_documented("clip_update", result)
    finally:
        recorder.close()

    key = str(result["object_key"])
    assert key.startswith(f"gangnam/{camera_id}/{request.start:%Y/%m/%d}/") and key.endswith(".mp4")
    clip = client.get_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    body = clip["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result["sha256"] == clip["Metadata"]["sha256"]
    clip_path = camera / "clip.mp4"
    clip_path.write_bytes(body)
    probe = ffprobe(clip_path)
    assert probe["streams"][0]["codec_name"] == "h264"
    duration = float(probe["format"]["duration"])
    assert abs(duration - 3.0) <= 1.0 + 0.1, duration  # within one GOP (1 s) of the window
    manifest = json.loads(client.get_object(Bucket=bucket, Key=str(result["manifest_key"]))["Body"].read())  # type: ignore[attr-defined]
    thumbnail = client.get_object(Bucket=bucket, Key=str(result["thumbnail_key"]))["Body"].read()  # type: ignore[attr-defined]
    assert thumbnail[:2] == b"\xff\xd8"  # a JPEG
    key_pem = public_key_pem(load_or_create_key(settings.clips.key_file))
    assert verify(clip_path, manifest, key_pem) == []
    assert verify(clip_path, {**manifest, "incident": "forged"}, key_pem) != []


def ffprobe(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result
