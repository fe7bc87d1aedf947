"""The platform end to end inside `cctv-collector run`, over real HTTP and a real Mosquitto (SQLite and
PostgreSQL): cameras reported by an agent become the nearest cameras of an incident, a clip request reaches
the district's command topic signed by the collector, and the agent's answer shows in the clip's state."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.index.store import open_store
from common.signing import key_id, load_or_create_key, public_key_pem, signature_problem, signed_body
from contract import topics
from contract.codec import encode
from contract.messages import AnyMessage, ClipRequest, ClipUpdate
from tests.collector.audit_helpers import locked_bucket
from tests.collector.conftest import agent, api_headers, meta, start_collector_process, wait_until
from tests.collector.platform_harness import CAMERAS, GANGNAM_OFFICE, upload_clip
from tests.services import CephS3, Mosquitto

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


class Agent:
    """What a district agent does on the broker: report cameras, take commands, answer them."""

    def __init__(self, broker: Mosquitto) -> None:
        self.commands: list[dict[str, Any]] = []
        self.got = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topics.commands_filter("gangnam"), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.got:
            self.commands.append(json.loads(msg.payload))

    def publish(self, *messages: AnyMessage) -> None:
        for m in messages:
            d = encode(m)
            self.client.publish(d.topic, d.payload, qos=1, retain=d.retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def running(tmp_path: Path, mosquitto: Mosquitto, store_url: str) -> Iterator[tuple[httpx.Client, Agent]]:
    proc, http_port, _ = start_collector_process(
        tmp_path,
        mosquitto,
        stderr=subprocess.PIPE,
        store_url=store_url,
        extra="[platform]\nnearest_refresh_s = 0.2",
    )
    district_agent = Agent(mosquitto)
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5)
    try:
        wait_until(lambda: _up(client), timeout_s=20, what="the API")
        yield client, district_agent
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        client.close()
        district_agent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _up(client: httpx.Client) -> bool:
    try:
        return client.get("/v1/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_incident_to_signed_clip_command_to_clip_state(
    running: tuple[httpx.Client, Agent], tmp_path: Path
) -> None:
    client, district_agent = running
    gangnam = {c: at for c, (d, at) in CAMERAS.items() if d == "gangnam"}
    district_agent.publish(agent(), *(meta(c, lat=lat, lon=lon) for c, (lat, lon) in gangnam.items()))
    ops, police = api_headers(tmp_path), api_headers(tmp_path, "police-112", "operator", "officer-kim")
    wait_until(
        lambda: client.get("/v1/cameras", headers=ops).json().get("count") == len(gangnam),
        what="cameras indexed",
    )
    body = {
        "incident_no": "112-2026-0042", "service": "112-video", "type": "robbery",
        "lat": GANGNAM_OFFICE[0], "lon": GANGNAM_OFFICE[1], "occurred_at": datetime.now(UTC).isoformat(),
        "radius_m": 500, "purpose": "follow the suspect",
    }  # fmt: skip
    r = client.post("/v1/incidents", json=body, headers=police)
    assert r.status_code == 201, r.text
    incident_id = r.json()["incident"]["incident_id"]
    nearby = f"/v1/incidents/{incident_id}/cameras"
    wait_until(  # the nearest-camera index follows the cameras table within its refresh interval
        lambda: (
            [c["camera_id"] for c in client.get(nearby, headers=police).json()["cameras"]]
            == ["gn-office", "gn-office-2"]
        ),
        what="the nearest cameras",
    )
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(seconds=30)).isoformat(), "end": now.isoformat()}
    r = client.post(f"/v1/incidents/{incident_id}/clips", json={"nearest": 1, **window}, headers=police)
    assert r.status_code == 202, r.text
    [clip] = r.json()["clips"]

    with district_agent.got:
        assert district_agent.got.wait_for(lambda: district_agent.commands, timeout=10)
        received = list(district_agent.commands)
    # Until the agent answers, the outbox publishes the command again (QoS 1 may repeat it too): one request.
    [command] = {c.request_id: c for c in map(ClipRequest.model_validate, received)}.values()
    public = load_or_create_key(tmp_path / "commands.key").public_key()
    assert signature_problem(signed_body(command), command.signature, {key_id(public): public}) is None
    assert (command.request_id, command.camera_id, command.priority, command.requested_by) == (
        clip["clip_id"],
        "gn-office",
        "112",
        "officer-kim",
    )

    answer = {"district": "gangnam", "request_id": command.request_id, "camera_id": "gn-office",
              "agent_id": "agent-gangnam"}  # fmt: skip
    district_agent.publish(
        ClipUpdate(**answer, status="capturing", sent_at=datetime.now(UTC), source="preroll")
    )
    wait_until(
        lambda: client.get(f"/v1/clips/{clip['clip_id']}", headers=police).json()["state"] == "capturing",
        what="the agent's answer in the clip's state",
    )
    assert client.get(f"/v1/clips/{clip['clip_id']}", headers=police).json()["source"] == "preroll"


def test_the_whole_path_to_playback_and_a_verified_audit_trail(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[S3Client, str]
) -> None:
    """incident -> nearest cameras -> clip -> the agent's delivery -> verified manifest -> presigned playback,
    every step on the audit trail, whose checkpoints `cctv-collector audit verify` then holds it against."""
    s3, clips_bucket = s3_bucket
    _, audit_bucket = locked_bucket(ceph_s3)
    keys_dir, agent_key = tmp_path / "agent-keys", tmp_path / "agent-gangnam.key"
    keys_dir.mkdir()
    (keys_dir / "gangnam.pem").write_bytes(public_key_pem(load_or_create_key(agent_key)))
    extra = (
        f'[platform]\nnearest_refresh_s = 0.2\nagent_keys_dir = "{keys_dir}"\n'
        f'[s3]\nendpoint_url = "{ceph_s3.endpoint}"\nregion = "{ceph_s3.region}"\nbucket = "{clips_bucket}"\n'
        f'access_key = "{ceph_s3.access_key}"\nsecret_key = "{ceph_s3.secret_key}"\n'
        f'[audit]\nbucket = "{audit_bucket}"\nkey_path = "{tmp_path / "audit-key.pem"}"\n'
        "checkpoint_interval_s = 0.5\nretention_days = 365\n"
    )
    proc, http_port, _ = start_collector_process(tmp_path, mosquitto, stderr=subprocess.PIPE, extra=extra)
    district_agent = Agent(mosquitto)
    police = api_headers(tmp_path, "police-112", "operator", "officer-kim")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5) as client:
            wait_until(lambda: _up(client), timeout_s=20, what="the API")
            district_agent.publish(agent(), meta("gn-office", lat=GANGNAM_OFFICE[0], lon=GANGNAM_OFFICE[1]))
            incident_id = _open_incident_once_cameras_are_near(client, police)
            now = datetime.now(UTC)
            window = {"start": (now - timedelta(seconds=30)).isoformat(), "end": now.isoformat()}
            r = client.post(
                f"/v1/incidents/{incident_id}/clips", json={"nearest": 1, **window}, headers=police
            )
            [clip] = r.json()["clips"]
            data, update = upload_clip(s3, clips_bucket, clip, agent_key)
            district_agent.publish(update)
            url = f"/v1/clips/{clip['clip_id']}"
            wait_until(
                lambda: client.get(url, headers=police).json()["state"] == "succeeded", what="delivery"
            )
            shown = client.get(url, headers=police).json()
            assert shown["manifest_verified"] is True, shown["manifest_problem"]
            assert httpx.get(shown["playback"]["url"], timeout=10).content == data
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # and a last checkpoint of the head on the way out
    finally:
        district_agent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    verified = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "audit",
            "verify",
            "--json",
            "--config",
            str(tmp_path / "collector.toml"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with closing(open_store(f"sqlite://{tmp_path / 'run.db'}")) as store, store.reading() as tx:
        actions = [a for (a,) in tx.query("SELECT action FROM audit_log ORDER BY seq")]
    assert {"incident.open", "cameras.nearby", "clip.request", "clip.playback", "clip.thumbnail"} <= set(
        actions
    )


def _open_incident_once_cameras_are_near(client: httpx.Client, headers: dict[str, str]) -> str:
    body = {
        "incident_no": "112-2026-0043", "service": "112-video", "type": "robbery",
        "lat": GANGNAM_OFFICE[0], "lon": GANGNAM_OFFICE[1], "occurred_at": datetime.now(UTC).isoformat(),
        "radius_m": 500, "purpose": "identify the suspect's escape route",
    }  # fmt: skip
    incident_id: str = client.post("/v1/incidents", json=body, headers=headers).json()["incident"][
        "incident_id"
    ]
    nearby = f"/v1/incidents/{incident_id}/cameras"
    wait_until(lambda: bool(client.get(nearby, headers=headers).json()["cameras"]), what="the camera nearby")
    return incident_id
