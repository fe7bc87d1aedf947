"""The streaming uploader: against the real Ceph S3 gateway for what a user checks (the object, its bytes,
its digest, its retention), and with a stub client for the call sequence on failure."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from prometheus_client import CollectorRegistry

from agent.clips.blocked import UploadBlock
from agent.clips.metrics import ClipMetrics
from agent.clips.s3 import UploadError
from agent.clips.upload import ObjectLock, Uploader, UploadJob, UploadScheduler, upload_rank
from tests.services import CephS3, s3_client_config

MIB = 2**20
PART = 5 * MIB


def grow(
    path: Path,
    data: bytes,
    finished: threading.Event,
    finished_at: list[float],
    *,
    chunk: int = MIB,
    pause_s: float = 0.05,
) -> None:
    """Append `data` in chunks like a capture writing fragments, then say when it was done."""
    with path.open("wb") as f:
        for i in range(0, len(data), chunk):
            f.write(data[i : i + chunk])
            f.flush()
            time.sleep(pause_s)
    finished_at.append(time.monotonic())
    finished.set()


@pytest.mark.integration
def test_growing_file_becomes_an_identical_object_with_its_sha256(
    tmp_path: Path, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    data = os.urandom(12 * MIB + 4321)  # two full parts while growing, the rest as the last part
    path, finished = tmp_path / "clip.mp4", threading.Event()
    finished_at: list[float] = []
    writer = threading.Thread(target=grow, args=(path, data, finished, finished_at))
    writer.start()
    uploaded_at: list[float] = []  # one entry per part stored
    uploader = Uploader(
        client, UploadScheduler(2), PART, on_bytes=lambda _: uploaded_at.append(time.monotonic())
    )
    result = uploader.upload_file(UploadJob(bucket, "k/clip.mp4", path, 0), finished)
    writer.join()
    assert min(uploaded_at) < finished_at[0], "the first part goes while the capture is still writing"
    done_after_s = result.completed_monotonic - finished_at[0]  # streamed: only the last part is left
    obj = client.get_object(Bucket=bucket, Key="k/clip.mp4")
    assert obj["Body"].read() == data
    assert obj["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest() == result.sha256
    assert (result.size_bytes, result.parts) == (len(data), 3)
    assert 0 <= done_after_s < 1.0


@pytest.mark.integration
def test_complete_file_carries_its_digest_and_object_lock_retention(tmp_path: Path, ceph_s3: CephS3) -> None:
    client = ceph_s3.client()
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    path, done = tmp_path / "clip.mp4", threading.Event()
    path.write_bytes(os.urandom(6 * MIB))
    done.set()
    uploader = Uploader(client, UploadScheduler(2), PART)
    lock = ObjectLock("COMPLIANCE", 30)
    uploader.upload_file(UploadJob(bucket, "c.mp4", path, 0, {"request-id": "r1"}, lock=lock), done)
    uploader.put_bytes(UploadJob(bucket, "c.jpg", path, 0, {}, "image/jpeg", lock), b"\xff\xd8jpeg")
    head = client.head_object(Bucket=bucket, Key="c.mp4")
    assert head["Metadata"] == {"request-id": "r1", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    for key in ("c.mp4", "c.jpg"):
        retention = client.get_object_retention(Bucket=bucket, Key=key)["Retention"]
        assert retention["Mode"] == "COMPLIANCE"
        days = (retention["RetainUntilDate"].timestamp() - time.time()) / 86400
        assert 29.9 < days <= 30
    versions = client.list_object_versions(Bucket=bucket, Prefix="c.mp4")["Versions"]
    assert versions
    for version in versions:
        with pytest.raises(client.exceptions.ClientError) as refused:  # what Object Lock is for
            client.delete_object(Bucket=bucket, Key="c.mp4", VersionId=version["VersionId"])
        assert refused.value.response["Error"]["Code"] == "AccessDenied"


class _DownClient:
    """A stub S3 client whose gateway goes away after the multipart upload is created."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def create_multipart_upload(self, **_: Any) -> dict[str, str]:
        self.calls.append("create")
        return {"UploadId": "u1"}

    def upload_part(self, **_: Any) -> dict[str, str]:
        self.calls.append("part")
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    def abort_multipart_upload(self, **_: Any) -> None:
        self.calls.append("abort")


def test_unreachable_gateway_retries_the_part_then_aborts_and_says_transient(tmp_path: Path) -> None:
    path, done = tmp_path / "clip.mp4", threading.Event()
    path.write_bytes(b"x" * 1000)
    done.set()
    client = _DownClient()
    uploader = Uploader(client, UploadScheduler(1), PART, part_retries=2)  # type: ignore[arg-type]
    with pytest.raises(UploadError) as caught:
        uploader.upload_file(UploadJob("b", "k", path, 0), done)
    assert caught.value.transient
    assert isinstance(caught.value.last_exception, EndpointConnectionError)
    assert client.calls == ["create", "part", "part", "part", "abort"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("wrong", "reason"),
    [
        ({"aws_access_key_id": "no-such-key"}, "invalid_access_key"),
        ({"aws_secret_access_key": "wrong-secret"}, "signature_mismatch"),
        ({"bucket": "no-such-bucket-here"}, "no_such_bucket"),
    ],
)
def test_refusals_a_person_must_fix_are_classified_as_blocked_not_transient(
    tmp_path: Path, ceph_s3: CephS3, s3_bucket: tuple[Any, str], wrong: dict[str, str], reason: str
) -> None:
    keys = {"aws_access_key_id": ceph_s3.access_key, "aws_secret_access_key": ceph_s3.secret_key}
    keys |= {k: v for k, v in wrong.items() if k != "bucket"}
    client = boto3.client(
        "s3", endpoint_url=ceph_s3.endpoint, region_name=ceph_s3.region, config=s3_client_config(), **keys
    )
    path, done = tmp_path / "clip.mp4", threading.Event()
    path.write_bytes(b"x" * 1000)
    done.set()
    job = UploadJob(wrong.get("bucket", s3_bucket[1]), "k", path, 0)
    with pytest.raises(UploadError) as caught:
        Uploader(client, UploadScheduler(1), PART).upload_file(job, done)
    assert (caught.value.blocked, caught.value.transient) == (reason, False)


@pytest.mark.integration
def test_abort_stale_aborts_the_interrupted_multipart_upload_of_its_key_only(
    tmp_path: Path, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    for key in ("cam/clip.mp4", "cam/clip.mp4", "cam/clip.mp4.other"):
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 100)
    uploader = Uploader(client, UploadScheduler(1), PART)
    assert uploader.abort_stale(UploadJob(bucket, "cam/clip.mp4", tmp_path / "clip.mp4", 0)) == 2
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["cam/clip.mp4.other"]


def test_scheduler_serves_best_priority_first_fifo_within_one() -> None:
    scheduler = UploadScheduler(max_parallel=1)
    order: list[str] = []
    hold = threading.Event()

    def part(name: str, rank: int) -> None:
        with scheduler.slot(rank, 1):
            order.append(name)
            if name == "first":
                hold.wait(5)

    first = threading.Thread(target=part, args=("first", 4))
    first.start()
    while not order:
        time.sleep(0.001)
    waiting = [("routine-a", 4), ("routine-b", 4), ("vulnerable", 3), ("112", 0), ("119", 1)]
    threads = []
    for name, rank in waiting:
        threads.append(threading.Thread(target=part, args=(name, rank)))
        threads[-1].start()
        time.sleep(0.02)  # arrival order matters for FIFO within a priority
    hold.set()
    for thread in [first, *threads]:
        thread.join(5)
    assert order == ["first", "112", "119", "vulnerable", "routine-a", "routine-b"]


def test_a_live_segment_never_waits_for_a_clip_part_and_goes_first_under_the_cap() -> None:
    scheduler = UploadScheduler(max_parallel=1, bandwidth_bps=8 * 10**6, live_parallel=1)  # 1 MB/s
    order: list[str] = []
    part_sent = threading.Event()
    release = threading.Event()

    def clip_part(name: str) -> None:
        with scheduler.slot(upload_rank("112"), 10**6):
            order.append(name)
            part_sent.set()
            release.wait(5)

    big = threading.Thread(target=clip_part, args=("clip-112",))
    big.start()
    part_sent.wait(5)
    waiting = threading.Thread(target=clip_part, args=("clip-112-next",))
    waiting.start()
    time.sleep(0.05)  # the next clip part waits: for the clip lane and for tokens
    began = time.monotonic()
    with scheduler.slot(upload_rank("112", live=True), 50_000, "live"):  # while the clip's part is in flight
        order.append("live-112")
    waited = time.monotonic() - began
    release.set()
    for thread in (big, waiting):
        thread.join(5)
    # It waited only for the bucket's debt of the part that was sent (1 MB at 1 MB/s), not for the part, and
    # went before the clip part that was waiting longer.
    assert order == ["clip-112", "live-112", "clip-112-next"]
    assert waited < 1.3
    assert upload_rank("routine", live=True) > upload_rank("112") > upload_rank("112", live=True)


def test_bandwidth_cap_holds_the_long_run_rate() -> None:
    scheduler = UploadScheduler(max_parallel=4, bandwidth_bps=80 * 10**6)  # 10 MB/s
    began = time.monotonic()
    for _ in range(6):
        with scheduler.slot(4, 2 * 10**6):  # 12 MB: the first part goes at once, the rest wait for tokens
            pass
    elapsed = time.monotonic() - began
    assert 0.95 < elapsed < 1.4


def test_upload_block_logs_an_error_once_per_state_change_and_sets_its_gauge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = ClipMetrics(CollectorRegistry())
    block = UploadBlock(metrics.uploads_blocked)

    def gauge(reason: str) -> float | None:
        return metrics.registry.get_sample_value("cctv_agent_clip_uploads_blocked", {"reason": reason})

    with caplog.at_level(logging.INFO, logger="agent.clips.blocked"):
        for _ in range(3):
            block.refused("access_denied", "k: S3 AccessDenied")
        block.refused("no_such_bucket", "k: S3 NoSuchBucket")
        block.accepted()
        block.accepted()
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR", "WARNING"]
    assert (gauge("access_denied"), gauge("no_such_bucket"), block.reason) == (0, 0, None)
