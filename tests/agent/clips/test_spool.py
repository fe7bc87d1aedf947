"""Store-and-forward: the spool's space policy, the outbox, and clips that survive an S3 outage and a
SIGKILLed agent (real Ceph gateway, real Mosquitto, real camsim camera and capture)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import av
import pytest
from botocore.exceptions import NoCredentialsError
from prometheus_client import CollectorRegistry

from agent.clips.outbox import Outbox
from agent.clips.service import ClipService
from agent.clips.settings import ClipBucketSettings, ClipSettings
from agent.clips.spool import CaptureInfo, Job, Spool
from agent.clips.writer import progress_path
from camsim.media import MediaLibrary
from camsim.model import CameraSpec
from camsim.rtsp_server import RtspServer
from contract.messages import ClipUpdate
from tests.agent.clips.clip_harness import (
    DISTRICT,
    FakePool,
    UpdateCollector,
    cameras,
    clip_request,
    utcnow,
)
from tests.agent.clips.test_service import final, rig, s3_settings
from tests.services import CephS3, Mosquitto, _is_dead
from tests.signed_commands import command_policy

HERE = Path(__file__).resolve().parent


# spool policy


def test_job_round_trip_and_a_corrupt_job_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    job = Job(request=clip_request(), capture=CaptureInfo(size_bytes=5, sha256="ab"), state="captured")
    spool.save(job)
    (tmp_path / "broken.job.json").write_text("{not json")
    assert spool.jobs() == [job]
    assert (tmp_path / "broken.job.json.corrupt").exists()


def test_full_spool_evicts_uploaded_clips_first_and_refuses_only_routine(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100_000)  # job files (~1 KB each) count too
    old = Job(request=clip_request(priority="routine"), state="uploaded")
    pending = Job(request=clip_request(priority="routine"), state="captured")
    for job in (old, pending):
        spool.save(job)
        spool.clip_path(job.request_id).write_bytes(b"x" * 40_000)
    assert spool.admit("new-1", 30_000, routine=True)  # fits once the uploaded clip is evicted
    assert not spool.clip_path(old.request_id).exists()
    assert spool.clip_path(pending.request_id).exists()  # not yet in S3: never evicted
    assert not spool.admit("new-2", 60_000, routine=True)
    assert spool.full
    assert spool.admit("evidence", 60_000, routine=False)  # 112 work is taken anyway, and the alert stays on
    assert spool.full
    spool.release("new-1")
    spool.release("evidence")
    spool.remove(pending.request_id)
    assert not spool.full


# outbox


class Receipt:
    def __init__(self) -> None:
        self.acked = False

    def is_published(self) -> bool:
        return self.acked


def update(request_id: str, status: str) -> ClipUpdate:
    return ClipUpdate(district=DISTRICT, request_id=request_id, camera_id="cam-1", agent_id="a1",
                      status=status, sent_at=utcnow())  # type: ignore[arg-type]  # fmt: skip


async def test_outbox_keeps_updates_until_acknowledged_and_across_reopen(tmp_path: Path) -> None:
    sent: list[tuple[ClipUpdate, Receipt]] = []

    def publish(u: ClipUpdate) -> Receipt:
        sent.append((u, Receipt()))
        return sent[-1][1]

    outbox = Outbox(tmp_path / "o.sqlite3", publish, poll_s=0.01)
    assert outbox.first_sight("r1") and not outbox.first_sight("r1")
    outbox.put(update("r1", "accepted"))
    outbox.put(update("r1", "succeeded"))  # supersedes the unsent progress update
    outbox.put(update("r2", "failed"))
    assert not await outbox.drain(0.1)
    assert [u.status for u, _ in sent] == ["succeeded", "failed"]
    sent[1][1].acked = True
    await outbox.drain(0.05)
    assert outbox.pending() == 1
    outbox.close()
    again = Outbox(tmp_path / "o.sqlite3", publish)  # an agent restart: the unacknowledged one is still there
    assert again.pending() == 1 and not again.first_sight("r1")
    again.close()


# real services


@pytest.mark.integration
async def test_clip_result_survives_broker_kill_in_outbox_db(tmp_path: Path, mosquitto: Mosquitto) -> None:
    from tests.agent.clips.clip_harness import MqttPublisher

    collector = UpdateCollector(mosquitto.host, mosquitto.port)
    publisher = MqttPublisher(mosquitto.host, mosquitto.port)
    outbox = Outbox(tmp_path / "o.sqlite3", publisher, poll_s=0.01)
    stop = asyncio.Event()
    runner = asyncio.create_task(outbox.run(stop))
    try:
        # SIGKILL loses what the broker has not saved (every second): let it save the collector's session,
        # as it long has in production, or the result would be acknowledged with no subscriber to get it.
        subscribed = time.time()
        await asyncio.to_thread(wait_for, lambda: saved_since(mosquitto, subscribed))
        await asyncio.to_thread(mosquitto.kill)
        outbox.put(update("r-kill", "succeeded"))
        await asyncio.sleep(0.3)
        assert outbox.pending() == 1
        await asyncio.to_thread(mosquitto.start, mosquitto.directory, mosquitto.port)
        got = await asyncio.to_thread(collector.wait_final, "r-kill", 15)
        assert got.status == "succeeded"
        assert await outbox.drain(5)
    finally:
        stop.set()
        await runner
        outbox.close()
        publisher.close()
        collector.close()


@pytest.mark.integration
async def test_outbox_does_not_publish_again_and_again_while_the_broker_is_down(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    from tests.agent.clips.clip_harness import MqttPublisher

    collector = UpdateCollector(mosquitto.host, mosquitto.port)
    publisher = MqttPublisher(mosquitto.host, mosquitto.port)
    published: list[str] = []

    def counting(u: ClipUpdate) -> Any:
        published.append(u.request_id)
        return publisher(u)

    outbox = Outbox(tmp_path / "o.sqlite3", counting, poll_s=0.01)
    stop = asyncio.Event()
    runner = asyncio.create_task(outbox.run(stop))
    try:
        await asyncio.to_thread(wait_for, publisher.client.is_connected)
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.to_thread(wait_for, lambda: not publisher.client.is_connected())
        ids = [f"r-down-{n}" for n in range(5)]
        for request_id in ids:
            outbox.put(update(request_id, "succeeded"))
        await asyncio.sleep(3.0)  # an outage: watch that the outbox does not keep feeding paho's queue
        assert len(published) <= len(ids)
        assert outbox.pending() == len(ids)
        await asyncio.to_thread(mosquitto.start, mosquitto.directory, mosquitto.port)
        for request_id in ids:
            got = await asyncio.to_thread(collector.wait_final, request_id, 15)
            assert got.status == "succeeded"
        assert await outbox.drain(5)
        assert sorted(published) == ids  # each result was handed to paho exactly once
    finally:
        stop.set()
        await runner
        outbox.close()
        publisher.close()
        collector.close()


def saved_since(broker: Mosquitto, since: float) -> bool:
    database = broker.directory / "mosquitto.db"
    return database.exists() and database.stat().st_mtime > since + 0.05


def wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def restart_gateway_later(ceph: CephS3, down_s: float) -> None:
    """Stop Ceph's S3 gateway (radosgw; the cluster keeps its data), start it again after `down_s`."""
    pid_file = ceph.directory / "pids" / "radosgw.pid"
    pid = int(pid_file.read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    while not _is_dead(pid):
        time.sleep(0.02)
    time.sleep(down_s)
    with (ceph.directory / "log" / "radosgw-again.out").open("wb") as out:
        child = subprocess.Popen([a.decode() for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    pid_file.write_text(str(child.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(ceph.endpoint, timeout=1)  # noqa: S310 - our own loopback gateway
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("radosgw did not come back")


class BrokenCredentials:
    """A real S3 client whose calls raise botocore's NoCredentialsError until `fixed` is set."""

    def __init__(self, client: Any) -> None:
        self.client, self.fixed, self.failures = client, threading.Event(), 0

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if self.fixed.is_set() or not callable(call):
            return call

        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            self.failures += 1
            raise NoCredentialsError

        return refuse


@pytest.mark.integration
async def test_missing_credentials_block_uploads_signal_it_probe_slowly_and_deliver_once_fixed(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    client = BrokenCredentials(ceph_s3.client())
    async with rig(tmp_path, mosquitto, ceph_s3, s3_bucket[1], s3_client=client, blocked_retry_s=0.5) as r:
        request = clip_request(length_s=1)
        r.service.handle(request)
        probes: list[float] = []
        while len(probes) < 3:  # the capture's upload, then two probes from the spool
            retries = r.sample("cctv_agent_clip_uploads_total", result="retry")
            if retries > len(probes):
                probes.append(time.monotonic())
            await asyncio.sleep(0.02)
        assert r.sample("cctv_agent_clip_uploads_blocked", reason="no_credentials") == 1
        assert probes[2] - probes[1] >= 0.5 - 0.05  # slow probes, not the usual backoff (0.2 s base here)
        waits = [
            u.reason or "" for u in r.collector.updates.get(request.request_id, []) if u.status == "uploading"
        ]
        assert any(w.startswith("waiting for storage") and "credentials" in w for w in waits)
        client.fixed.set()  # a person fixed the credentials: the spooled clip goes up without a restart
        result = await final(r, request.request_id)
        assert result.status == "succeeded"
        r.client.head_object(Bucket=r.bucket, Key=result.object_key)
        assert r.sample("cctv_agent_clip_uploads_blocked", reason="no_credentials") == 0


async def test_a_failing_spool_disk_does_not_stop_the_upload_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deliver() raising OSError (disk full while recording progress) leaves the clip for the next round."""
    from agent.clips.pipeline import Pipeline

    calls: list[str] = []

    async def flaky(self: Pipeline, job: Job) -> bool:
        calls.append(job.request_id)
        if len(calls) < 3:
            raise OSError(28, "No space left on device")
        return True

    monkeypatch.setattr(Pipeline, "deliver", flaky)
    settings = ClipSettings(spool_dir=tmp_path / "spool", key_file=tmp_path / "key.pem", retry_base_s=0.01,
                            retry_max_s=0.02)  # fmt: skip
    service = ClipService(
        settings, ClipBucketSettings(), district=DISTRICT, agent_id="a1", pool=FakePool(),
        publish=lambda u: None, policy=command_policy(tmp_path / "keys"), camera_lookup=cameras(),
        metrics_registry=CollectorRegistry(),
        s3_client=object(), signer=lambda m: m,
    )  # fmt: skip
    job = Job(request=clip_request(), state="captured")
    service.spool.save(job)
    await service.start()
    try:
        async with asyncio.timeout(10):
            while len(calls) < 3:  # noqa: ASYNC110 - the retry loop has no event to wait on
                await asyncio.sleep(0.02)
    finally:
        await service.stop(grace_s=1)
    assert calls == [job.request_id] * 3
    errors = service.metrics.registry.get_sample_value(
        "cctv_agent_clip_internal_errors_total", {"where": "upload_retry"}
    )
    assert errors == 2


@pytest.mark.integration
@pytest.mark.slow
async def test_clip_arrives_after_s3_gateway_stopped_mid_upload(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with CephS3().start(tmp_path / "ceph") as ceph:
        ceph.client().create_bucket(Bucket="outage")
        pool = FakePool(rate_bps=40_000_000)  # 5 MB/s: parts go up while the capture runs
        async with rig(tmp_path, mosquitto, ceph, "outage", pool) as r:
            request = clip_request(length_s=4)
            r.service.handle(request)
            while r.sample("cctv_agent_clip_uploaded_bytes_total") == 0:  # noqa: ASYNC110 - a metric, no event
                await asyncio.sleep(0.05)  # the first part is in S3
            await asyncio.to_thread(restart_gateway_later, ceph, 4.0)
            result = await final(r, request.request_id, timeout_s=60)
            assert result.status == "succeeded"
            waits = [u.reason for u in r.collector.updates[request.request_id] if u.status == "uploading"]
            assert any((reason or "").startswith("waiting for storage") for reason in waits)
            body = r.client.get_object(Bucket="outage", Key=result.object_key)["Body"].read()
            assert body == (r.settings.spool_dir / f"{request.request_id}.mp4").read_bytes()
            assert len(body) == 4 * 5_000_000
            assert r.sample("cctv_agent_clip_uploads_total", result="retry") >= 1


def driver_config(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, bucket: str, *, spec: CameraSpec, rtsp_port: int
) -> dict[str, Any]:
    """The CONFIG_JSON of service_driver.py for one camera served on `rtsp_port`."""
    s3 = s3_settings(ceph_s3, bucket).model_dump(mode="json")
    s3["secret_key"] = ceph_s3.secret_key
    return {"spool_dir": str(tmp_path / "spool"), "key_file": str(tmp_path / "key.pem"),
            "mqtt_host": mosquitto.host, "mqtt_port": mosquitto.port, "camera_id": spec.camera_id,
            "rtsp_url": f"rtsp://admin:admin@{spec.host}:{rtsp_port}/stream1", "s3": s3}  # fmt: skip


@pytest.mark.integration
async def test_sigkilled_agent_delivers_the_partial_clip_with_its_true_range(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    spec = CameraSpec("cam-kill", "test", "127.80.0.2", rtsp_port=0, main_size=(640, 360), gop=25)
    server = RtspServer(spec, MediaLibrary(tmp_path / "media", loop_s=4.0))
    await server.start()
    collector = UpdateCollector(mosquitto.host, mosquitto.port)
    config = driver_config(tmp_path, mosquitto, ceph_s3, s3_bucket[1], spec=spec, rtsp_port=server.port)
    request = clip_request(spec.camera_id, length_s=30, priority="112")
    clip = tmp_path / "spool" / f"{request.request_id}.mp4"
    driver = [sys.executable, str(HERE / "service_driver.py"), json.dumps(config)]
    try:
        first = await asyncio.create_subprocess_exec(*driver, request.model_dump_json())
        killed_at = await asyncio.to_thread(wait_for_fragments, clip, 3.0)
        first.kill()  # SIGKILL mid-capture, mid-upload
        await first.wait()
        second = await asyncio.create_subprocess_exec(*driver)
        try:
            result = await asyncio.to_thread(collector.wait_final, request.request_id, 60)
        finally:
            second.terminate()
            await second.wait()
    finally:
        collector.close()
        await server.stop()
    assert result.status == "succeeded"
    assert (result.reason or "").startswith("partial: stream lost / agent restarted")
    assert result.covered_start is not None and result.covered_end is not None
    assert abs((result.covered_start - request.start).total_seconds()) < 2.0
    assert 3.0 <= (result.covered_end - result.covered_start).total_seconds() <= killed_at + 1.5
    body = ceph_s3.client().get_object(Bucket=s3_bucket[1], Key=result.object_key)["Body"].read()
    assert len(body) == result.size_bytes
    (tmp_path / "got.mp4").write_bytes(body)
    with av.open(str(tmp_path / "got.mp4")) as container:  # the cut clip plays: every frame decodes
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 3 * 25


@pytest.mark.integration
@pytest.mark.parametrize("point", ["result", "uploaded"])
async def test_agent_sigkilled_between_upload_and_result_delivers_the_result_after_restart(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str], point: str
) -> None:
    """Killed once the clip is in S3 but before its result is stored (`result`), or before its job is marked
    uploaded (`uploaded`): the restarted agent still reports `succeeded` with the clip's keys and digest."""
    spec = CameraSpec("cam-crash", "test", "127.76.0.2", rtsp_port=0, main_size=(320, 180), gop=25)
    server = RtspServer(spec, MediaLibrary(tmp_path / "media", loop_s=2.0))
    await server.start()
    collector = UpdateCollector(mosquitto.host, mosquitto.port)
    config = driver_config(tmp_path, mosquitto, ceph_s3, s3_bucket[1], spec=spec, rtsp_port=server.port)
    driver = [sys.executable, str(HERE / "service_driver.py"), json.dumps(config)]
    env = {**os.environ, "CLIP_DRIVER_KILL_AT": point}
    first = await asyncio.create_subprocess_exec(
        *driver, "-", env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert first.stdin is not None and first.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert await first.stdout.readline() == b"ready\n"
            # A window of "now", asked once the driver runs (starting Python may take seconds on a busy box).
            request = clip_request(spec.camera_id, length_s=1, priority="112")
            first.stdin.write(request.model_dump_json().encode() + b"\n")
            await first.stdin.drain()
            assert await first.wait() == -signal.SIGKILL  # it reached the point and died there
        second = await asyncio.create_subprocess_exec(*driver)
        try:
            result = await asyncio.to_thread(collector.wait_final, request.request_id, 30)
        finally:
            second.terminate()
            await second.wait()
    finally:
        if first.returncode is None:  # it never reached the point: do not leave it running
            first.kill()
            await first.wait()
        collector.close()
        await server.stop()
    assert result.status == "succeeded", result.reason
    body = ceph_s3.client().get_object(Bucket=s3_bucket[1], Key=result.object_key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.sha256
    manifest = ceph_s3.client().get_object(Bucket=s3_bucket[1], Key=result.manifest_key)["Body"].read()
    assert json.loads(manifest)["request_id"] == request.request_id


def wait_for_fragments(clip: Path, covered_s: float) -> float:
    """Wait until the capture's sidecar says `covered_s` are written; the covered seconds then."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            record = json.loads(progress_path(clip).read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("covered_end") and record.get("covered_start"):
            from datetime import datetime

            span = datetime.fromisoformat(record["covered_end"]) - datetime.fromisoformat(
                record["covered_start"]
            )
            if span.total_seconds() >= covered_s:
                return span.total_seconds()
        time.sleep(0.05)
    raise AssertionError(f"capture never covered {covered_s} s")
