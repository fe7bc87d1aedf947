"""S3 outage during a capture: the real agent, a camsim camera, the real Ceph gateway behind a TCP proxy on
127.0.0.1 that the test cuts (connections reset, new ones refused) and restores. The clip is delivered intact
once S3 is back (its sha256 matches the signed manifest, `cctv-agent verify-clip` passes) and no multipart
upload is left behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from common.signing import load_or_create_key, public_key_pem
from contract import topics
from contract.codec import encode
from contract.messages import ClipRequest
from tests.integration.conftest import (
    Recorder,
    camera_fixture,
    clip_agent_settings,
    eventually,
    running,
)
from tests.services import CephS3, Mosquitto, free_port
from tests.signed_commands import collector_key_file, signed

BASE_IP = "127.76.0.1"  # this suite's own camsim range


class CuttableProxy:
    """Forwards TCP from 127.0.0.1:`port` to `target`; `cut()` resets every connection and refuses new ones
    (the gateway is down, as the agent sees it), `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._open:
            writer.transport.abort()  # RST: requests in flight fail, as when the gateway dies
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._open.discard(w)
            w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


camera = camera_fixture(BASE_IP)


@pytest.fixture
async def proxy(ceph_s3: CephS3) -> AsyncIterator[CuttableProxy]:
    endpoint = ceph_s3.endpoint.removeprefix("http://").rstrip("/")
    host, port = endpoint.rsplit(":", 1)
    proxy = CuttableProxy(host, int(port))
    await proxy.restore()
    yield proxy
    await proxy.cut()


def agent_settings(directory: Path, mosquitto: Mosquitto, ceph: CephS3, bucket: str, s3_port: int) -> Any:
    return clip_agent_settings(
        directory, mosquitto, ceph, bucket, "gangnam-s3-outage",
        s3={"endpoint_url": f"http://127.0.0.1:{s3_port}", "max_attempts": 2, "connect_timeout_s": 1.0,
            "read_timeout_s": 5.0},
        clips={"retry_base_s": 0.2, "retry_max_s": 1.0},
        collector_public_keys=[collector_key_file(directory)],
    )  # fmt: skip


async def test_clip_cut_off_from_s3_mid_capture_is_delivered_intact_with_no_orphaned_upload(
    camera: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str], proxy: CuttableProxy
) -> None:
    client, bucket = s3_bucket
    settings = agent_settings(camera, mosquitto, ceph_s3, bucket, proxy.port)
    agent, recorder, camera_id = Agent(settings), Recorder(mosquitto.port), "gangnam-00001"

    def clip_state() -> dict[str, object]:
        return recorder.get(topics.clip("gangnam", request.request_id)) or {}

    def unfinished() -> list[Any]:
        return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    try:
        async with running(agent, timeout_s=60):
            status = topics.camera_status("gangnam", camera_id)
            await eventually(lambda: (recorder.get(status) or {}).get("state") == "online", 20, "online")
            request = clip_request(camera_id)
            delivery = encode(request)
            recorder.client.publish(delivery.topic, delivery.payload, qos=1)
            await eventually(lambda: bool(unfinished()), 10, "the clip's multipart upload started")
            await proxy.cut()  # mid-capture: the upload streaming the clip loses S3
            await eventually(
                lambda: str(clip_state().get("reason", "")).startswith("waiting for storage"),
                30,
                "the agent says the clip waits for storage",
            )
            assert unfinished(), "the interrupted upload could not be aborted while S3 was away"
            blocked = agent.clips.metrics.registry.get_sample_value("cctv_agent_clip_uploads_blocked")
            assert blocked is None  # an outage is retried, not reported as needing a person
            await proxy.restore()
            await eventually(lambda: clip_state().get("status") == "succeeded", 30, "the clip delivered")
            result = clip_state()
    finally:
        recorder.close()

    assert unfinished() == []  # the interrupted multipart upload was aborted, not orphaned
    body = client.get_object(Bucket=bucket, Key=str(result["object_key"]))["Body"].read()
    manifest_bytes = client.get_object(Bucket=bucket, Key=str(result["manifest_key"]))["Body"].read()
    manifest = json.loads(manifest_bytes)
    assert hashlib.sha256(body).hexdigest() == result["sha256"] == manifest["clip"]["sha256"]
    (camera / "clip.mp4").write_bytes(body)
    (camera / "manifest.json").write_bytes(manifest_bytes)
    (camera / "public.pem").write_bytes(public_key_pem(load_or_create_key(settings.clips.key_file)))
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "verify-clip", "--clip", str(camera / "clip.mp4"),
        "--manifest", str(camera / "manifest.json"), "--public-key", str(camera / "public.pem"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await verify.communicate()
    assert verify.returncode == 0, output.decode()


def clip_request(camera_id: str) -> ClipRequest:
    now = datetime.now(UTC)
    return signed(ClipRequest(
        district="gangnam", request_id=f"req-{uuid.uuid4().hex[:12]}", camera_id=camera_id,
        start=now + timedelta(seconds=1), end=now + timedelta(seconds=4), purpose="fault suite: S3 outage",
        agency="police-112", priority="112", sent_at=now,
    ))  # fmt: skip
