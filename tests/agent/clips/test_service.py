"""The clip service end to end against a real Mosquitto and the real Ceph S3 gateway, with a fake capture
pool (bytes written in real time like the capture side) unless a test says otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from agent.clips.admission import NO_RECORDED_SOURCE
from agent.clips.manifest import verify
from agent.clips.s3 import clip_keys
from agent.clips.service import ClipService
from agent.clips.settings import ClipBucketSettings, ClipSettings
from agent.config import CommandSettings
from common.signing import load_or_create_key, public_key_pem
from contract.messages import ArmRequest
from tests.agent.clips.clip_harness import (
    DISTRICT,
    FakePool,
    MqttPublisher,
    UpdateCollector,
    cameras,
    clip_request,
    utcnow,
)
from tests.services import CephS3, Mosquitto
from tests.signed_commands import command_policy, signed

# A window in the past that no buffer holds, of a camera without recorded storage (agent/clips/sources.py).
NO_SOURCE = (
    "no source holds the window: pre-roll: start further in the past than any buffer holds; "
    f"recording: {NO_RECORDED_SOURCE}"
)

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    service: ClipService
    pool: FakePool
    collector: UpdateCollector
    client: Any
    bucket: str
    settings: ClipSettings

    def sample(self, name: str, **labels: str) -> float:
        value = self.service.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0


def s3_settings(ceph: CephS3, bucket: str, **extra: Any) -> ClipBucketSettings:
    return ClipBucketSettings(endpoint_url=ceph.endpoint, region=ceph.region, bucket=bucket,
                      access_key=ceph.access_key, secret_key=ceph.secret_key, **extra)  # fmt: skip


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, broker: Mosquitto, ceph: CephS3, bucket: str, pool: FakePool | None = None, *,
              s3_client: Any = None, camera_lookup: Any = None, commands: dict[str, Any] | None = None,
              **settings: Any) -> AsyncIterator[Rig]:  # fmt: skip
    """`commands`: the district's [commands] settings beyond trusting the collector test key."""
    clip_settings = ClipSettings(spool_dir=tmp_path / "spool", key_file=tmp_path / "key.pem",
                                 retry_base_s=0.2, retry_max_s=1.0, **settings)  # fmt: skip
    pool = pool or FakePool()
    collector = UpdateCollector(broker.host, broker.port)
    publisher = MqttPublisher(broker.host, broker.port)
    service = ClipService(
        clip_settings, s3_settings(ceph, bucket), district=DISTRICT, agent_id="agent-gangnam", pool=pool,
        publish=publisher, policy=command_policy(tmp_path / "keys", **(commands or {})),
        camera_lookup=camera_lookup or cameras(offline=("cam-off",)),
        metrics_registry=CollectorRegistry(), s3_client=s3_client,
    )  # fmt: skip
    await service.start()
    try:
        yield Rig(service, pool, collector, ceph.client(), bucket, clip_settings)
    finally:
        await service.stop(grace_s=5)
        publisher.close()
        collector.close()


async def final(r: Rig, request_id: str, timeout_s: float = 20.0) -> Any:
    return await asyncio.to_thread(r.collector.wait_final, request_id, timeout_s)


async def test_clip_is_captured_uploaded_signed_and_reported(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1]) as r:
        request = clip_request(length_s=2.0)
        r.service.handle(request)
        result = await final(r, request.request_id)
        assert result.status == "succeeded", result.reason
        assert r.collector.statuses(request.request_id)[:4] == [
            "accepted",
            "capturing",
            "uploading",
            "succeeded",
        ]
        assert result.reason is None
        assert result.source == "live"  # the window starts now: cut from the live stream
        start = request.start
        assert result.object_key == (f"{DISTRICT}/cam-1/{start:%Y/%m/%d}/{start:%Y%m%dT%H%M%SZ}_"
                                     f"{request.request_id}.mp4")  # fmt: skip
        spooled = (r.settings.spool_dir / f"{request.request_id}.mp4").read_bytes()
        obj = r.client.get_object(Bucket=r.bucket, Key=result.object_key)
        assert obj["Body"].read() == spooled
        assert obj["Metadata"]["sha256"] == result.sha256
        assert result.size_bytes == len(spooled) == 2 * 4_000_000 // 8
        assert (result.covered_start, result.covered_end) == (request.start, request.end)
        manifest = json.loads(r.client.get_object(Bucket=r.bucket, Key=result.manifest_key)["Body"].read())
        thumbnail = r.client.get_object(Bucket=r.bucket, Key=result.thumbnail_key)["Body"].read()
        key_pem = public_key_pem(load_or_create_key(r.settings.key_file))
        assert verify(spooled, manifest, key_pem, thumbnail=thumbnail) == []
        assert manifest["camera"]["model"] == "XNO-6080R"
        assert "secret" not in json.dumps(manifest)  # the camera's RTSP credentials never leave the agent
        assert r.sample("cctv_agent_clip_captures_total", result="complete") == 1
        assert r.sample("cctv_agent_clip_uploaded_bytes_total") == len(spooled)
        # streamed while captured: the object is complete well within 1.5 s after the window ended
        assert r.sample("cctv_agent_clip_window_end_to_object_seconds_count") == 1
        assert r.sample("cctv_agent_clip_window_end_to_object_seconds_bucket", le="1.5") == 1


async def test_each_invalid_request_gets_a_failed_result_with_its_reason(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], commands={"max_window_s": 60},
                   spool_max_bytes=2**20, estimated_bitrate_bps=4_000_000) as r:  # fmt: skip
        cases = {
            "unknown camera": clip_request("nvr-9"),
            "window_too_long": clip_request(length_s=61),
            "camera offline": clip_request("cam-off"),
            NO_SOURCE: clip_request(start_in_s=-30),
            "window_in_future": clip_request(start_in_s=301),  # max_future_s defaults to 300
            "spool full": clip_request(length_s=5, priority="routine"),  # 2.5 MB > 1 MiB
        }
        for request in cases.values():
            r.service.handle(request)
        for reason, request in cases.items():
            result = await final(r, request.request_id)
            assert (result.status, result.reason) == ("failed", reason)
        assert r.sample("cctv_agent_spool_full") == 1
        assert r.pool.calls == []


async def test_an_unexpected_error_gets_a_failed_result_and_the_redelivery_is_served(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    healthy = cameras()
    broken = threading.Event()
    broken.set()

    def lookup(camera_id: str) -> Any:
        if broken.is_set():
            raise RuntimeError("registry is being rebuilt")
        return healthy(camera_id)

    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], camera_lookup=lookup) as r:
        request = clip_request()
        r.service.handle(request)
        result = await final(r, request.request_id)
        assert (result.status, result.reason) == ("failed", "internal error")
        assert r.sample("cctv_agent_clip_internal_errors_total", where="command") == 1
        broken.clear()
        r.service.handle(request)  # the broker redelivers it: not dropped as a duplicate
        await asyncio.to_thread(r.collector.wait_status, request.request_id, "succeeded")
        assert r.sample("cctv_agent_clip_requests_total", outcome="duplicate") == 0
        assert r.pool.calls == [request.request_id]


def test_max_future_s_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="max_future_s"):
        CommandSettings(max_future_s=0)


async def test_a_window_in_the_future_does_not_hold_a_capture_worker(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], max_concurrent_captures=1) as r:
        later = clip_request(start_in_s=120, priority="routine")
        r.service.handle(later)
        await asyncio.to_thread(r.collector.wait_status, later.request_id, "accepted")  # fails if it never is
        urgent = clip_request(priority="112")
        r.service.handle(urgent)
        assert (await final(r, urgent.request_id, timeout_s=10)).status == "succeeded"
        assert r.pool.calls == [urgent.request_id]  # the later window waits on a timer, not in the worker
    job = json.loads((r.settings.spool_dir / f"{later.request_id}.job.json").read_text())
    assert job["state"] == "queued"  # still in the spool: resumed by the next start


async def test_every_running_capture_streams_its_upload(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    # As many captures as asyncio's default pool has threads: each one's upload must still run beside it,
    # so that only the clip's last part is left to send when the window ends.
    workers = min(32, (os.cpu_count() or 1) + 4)
    pool = FakePool(speed=20.0, release=threading.Event())
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], pool, max_concurrent_captures=workers) as r:
        requests = [clip_request() for _ in range(workers)]
        for request in requests:
            r.service.handle(request)
        deadline = time.monotonic() + 10
        while len(uploads := r.client.list_multipart_uploads(Bucket=r.bucket).get("Uploads", [])) < workers:
            assert time.monotonic() < deadline, f"{len(uploads)} of {workers} uploads began during capture"
            await asyncio.sleep(0.05)
        assert len(pool.calls) == workers  # every capture is still running: they wait for `release`
        assert pool.release is not None
        pool.release.set()
        for request in requests:
            assert (await final(r, request.request_id)).status == "succeeded"


async def test_spool_full_still_takes_112_evidence(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], spool_max_bytes=2**20,
                   estimated_bitrate_bps=4_000_000) as r:  # fmt: skip
        request = clip_request(length_s=3, priority="112")
        r.service.handle(request)
        assert (await final(r, request.request_id)).status == "succeeded"
        assert r.sample("cctv_agent_clip_requests_total", outcome="accepted") == 1


async def test_112_waiting_behind_routine_work_is_served_first(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    pool = FakePool(speed=20.0, release=threading.Event())
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], pool, max_concurrent_captures=1) as r:
        busy = clip_request(priority="routine")
        r.service.handle(busy)
        await asyncio.to_thread(pool.started.wait, 5)  # the only capture slot is taken
        routine = [clip_request(priority="routine") for _ in range(2)]
        urgent = clip_request(priority="112")
        for request in [*routine, urgent]:
            r.service.handle(request)
        assert pool.release is not None
        pool.release.set()
        for request in [busy, *routine, urgent]:
            assert (await final(r, request.request_id)).status == "succeeded"
        order = [busy, urgent, *routine]
        assert pool.calls == [request.request_id for request in order]


async def test_a_buffered_window_is_held_while_its_request_waits_for_a_worker(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    pool = FakePool(speed=20.0, release=threading.Event(), earliest=utcnow() - timedelta(seconds=60))
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], pool, max_concurrent_captures=1) as r:
        busy = clip_request(priority="routine")
        r.service.handle(busy)
        await asyncio.to_thread(pool.started.wait, 5)  # the only capture slot is taken
        past = clip_request(start_in_s=-30, length_s=1)
        r.service.handle(past)
        assert pool.held == {past.request_id: past.start}  # kept for it however long the arm lasts
        assert busy.request_id not in pool.held  # a live window needs no buffer
        assert pool.release is not None
        pool.release.set()
        assert (await final(r, past.request_id)).status == "succeeded"
        assert pool.held == {}  # released once its capture has run


async def test_duplicate_delivery_makes_one_clip_even_across_restarts(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    request = clip_request()
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1]) as r:
        r.service.handle(request)
        r.service.handle(request)
        assert (await final(r, request.request_id)).status == "succeeded"
        assert r.sample("cctv_agent_clip_requests_total", outcome="duplicate") == 1
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1]) as again:
        again.service.handle(request)  # decided at once: duplicate, or accepted and queued
        assert again.sample("cctv_agent_clip_requests_total", outcome="duplicate") == 1
        assert again.sample("cctv_agent_clip_requests_total", outcome="accepted") == 0
        assert again.pool.calls == []
    listed = r.client.list_objects_v2(Bucket=r.bucket, Prefix=f"{DISTRICT}/cam-1/")
    assert [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".mp4")] == [
        (await final(r, request.request_id)).object_key
    ]
    assert r.collector.statuses(request.request_id).count("accepted") == 1


async def test_result_survives_a_broker_restart(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], FakePool(release=threading.Event())) as r:
        request = clip_request()
        r.service.handle(request)
        await asyncio.to_thread(r.pool.started.wait, 5)
        await asyncio.to_thread(mosquitto.stop)  # the uplink to the broker is gone while the clip is made
        assert r.pool.release is not None
        r.pool.release.set()
        # The clip reaches S3 meanwhile; its result waits in the outbox.
        keys = clip_keys(DISTRICT, request.camera_id, request.start, request.request_id)
        await asyncio.to_thread(wait_for_object, r, keys.manifest)  # the last object of a clip
        assert await asyncio.to_thread(pending_status, r, request.request_id, "succeeded") == "succeeded"
        assert r.service.metrics.registry.get_sample_value("cctv_agent_clip_outbox_pending") == 1
        r.client.head_object(Bucket=r.bucket, Key=keys.clip)
        await asyncio.to_thread(mosquitto.start, mosquitto.directory, mosquitto.port)
        result = await final(r, request.request_id, timeout_s=15)
        assert result.status == "succeeded"
        r.client.head_object(Bucket=r.bucket, Key=result.object_key)


def wait_for_object(r: Rig, key: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r.client.head_object(Bucket=r.bucket, Key=key)
            return
        except ClientError:
            assert time.monotonic() < deadline, f"{key} never reached S3"
            time.sleep(0.05)


def pending_status(r: Rig, request_id: str, want: str, timeout_s: float = 5.0) -> str | None:
    """The status of the request's result waiting in the outbox, once it is `want` (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    with contextlib.closing(sqlite3.connect(r.settings.spool_dir / "outbox.sqlite3")) as db:
        while True:
            row = db.execute("SELECT payload FROM outbox WHERE request_id = ?", (request_id,)).fetchone()
            status = json.loads(row[0])["status"] if row else None
            if status == want or time.monotonic() > deadline:
                return status
            time.sleep(0.02)


async def test_arm_command_keeps_a_preroll(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1]) as r:
        arm = signed(ArmRequest(district=DISTRICT, request_id="arm-1", camera_id="cam-2", duration_s=300,
                                agency="seoul-police", sent_at=utcnow()))  # fmt: skip
        r.service.handle(arm)
        r.service.handle(arm.model_copy(update={"request_id": "arm-forged", "duration_s": 3600}))
        assert r.pool.armed == [("cam-2", 300)]  # the forged one is refused
        assert r.sample("cctv_agent_commands_refused_total", reason="signature_invalid") == 1
        # with a buffer that reaches back far enough, a past start is served
        r.pool.earliest = utcnow() - timedelta(seconds=60)
        request = clip_request(start_in_s=-30, length_s=1)
        r.service.handle(request)
        result = await final(r, request.request_id)
        assert (result.status, result.source) == ("succeeded", "preroll")
