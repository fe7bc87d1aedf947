"""The real-service harness does what tests, benchmarks and the demo rely on: a Mosquitto broker that keeps
retained messages across restarts and crashes, and a Ceph S3 gateway with multipart uploads, presigned URLs
and Object Lock."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from botocore.exceptions import ClientError
from paho.mqtt.enums import CallbackAPIVersion

from tests.services import CephS3, Mosquitto

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
WAIT_S = 5.0


# ---------------------------------------------------------------- MQTT helpers


class _Client:
    """A paho MQTT v5 client on a background thread whose received messages land in a queue."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.paho.on_connect = lambda *_args: self._connected.set()
        self.paho.on_subscribe = lambda *_args: self._subscribed.set()
        self.paho.on_message = lambda _client, _userdata, message: self.messages.put(message)
        self.paho.connect(broker.host, broker.port)
        self.paho.loop_start()
        assert self._connected.wait(WAIT_S), "no CONNACK"

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.paho.subscribe(topic, qos=1)
        assert self._subscribed.wait(WAIT_S), "no SUBACK"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.paho.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def mqtt_client(mosquitto: Mosquitto) -> Iterator[_Client]:
    client = _Client(mosquitto)
    yield client
    client.close()


def _topic() -> str:
    return f"test/{uuid.uuid4().hex}"


# ---------------------------------------------------------------- Mosquitto


def test_mqtt_v5_publish_subscribe_round_trip(mosquitto: Mosquitto, mqtt_client: _Client) -> None:
    topic = _topic()
    mqtt_client.subscribe(topic)
    publisher = _Client(mosquitto)
    publisher.publish(topic, b"hello district")
    publisher.close()

    message = mqtt_client.messages.get(timeout=WAIT_S)
    assert (message.topic, message.payload, message.qos) == (topic, b"hello district", 1)


def test_retained_message_survives_restart(mosquitto: Mosquitto, mqtt_client: _Client) -> None:
    topic = _topic()
    mqtt_client.publish(topic, b"online", retain=True)
    mqtt_client.close()
    old_pid = mosquitto.pid

    mosquitto.restart()

    assert mosquitto.pid != old_pid
    late = _Client(mosquitto)
    late.subscribe(topic)
    message = late.messages.get(timeout=WAIT_S)
    late.close()
    assert (message.payload, message.retain) == (b"online", True)


def test_retained_message_survives_sigkill_after_autosave(mosquitto: Mosquitto, mqtt_client: _Client) -> None:
    topic = _topic()
    mqtt_client.publish(topic, b"clip-42 stored", retain=True)
    published_ns = time.time_ns()
    mqtt_client.close()
    _wait_for_save(mosquitto.directory / "mosquitto.db", after_ns=published_ns)

    mosquitto.kill()
    mosquitto.restart()

    late = _Client(mosquitto)
    late.subscribe(topic)
    message = late.messages.get(timeout=WAIT_S)
    late.close()
    assert message.payload == b"clip-42 stored"


def _wait_for_save(db: Path, after_ns: int) -> None:
    """The broker saves its database every second (autosave_interval 1): wait for the next save."""
    deadline = time.monotonic() + WAIT_S
    while not (db.exists() and db.stat().st_mtime_ns > after_ns):
        assert time.monotonic() < deadline, "mosquitto never saved its database"
        time.sleep(0.05)


# ---------------------------------------------------------------- Ceph S3


def test_put_then_get_returns_the_same_bytes(s3_bucket: tuple[S3Client, str]) -> None:
    client, bucket = s3_bucket
    body = os.urandom(100_000)
    client.put_object(Bucket=bucket, Key="clips/cam-1.mp4", Body=body, ContentType="video/mp4")

    got = client.get_object(Bucket=bucket, Key="clips/cam-1.mp4")
    assert got["Body"].read() == body
    assert got["ContentType"] == "video/mp4"


def test_multipart_upload_of_20_mib_in_8_mib_parts_round_trips(s3_bucket: tuple[S3Client, str]) -> None:
    client, bucket = s3_bucket
    body = os.urandom(20 * MiB)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="big.mp4")["UploadId"]
    parts: list[CompletedPartTypeDef] = []
    for number, offset in enumerate(range(0, len(body), 8 * MiB), start=1):
        chunk = body[offset : offset + 8 * MiB]
        etag = client.upload_part(
            Bucket=bucket, Key="big.mp4", UploadId=upload_id, PartNumber=number, Body=chunk
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    client.complete_multipart_upload(
        Bucket=bucket, Key="big.mp4", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )

    # radosgw 16.2 answers CompleteMultipartUpload with an empty <ETag> (Red Hat BZ 2266579): ask HeadObject
    head = client.head_object(Bucket=bucket, Key="big.mp4")
    assert len(parts) == 3
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == 20 * MiB
    got = client.get_object(Bucket=bucket, Key="big.mp4")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()


def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT_S) as response:  # noqa: S310 - http to 127.0.0.1
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_presigned_get_works_and_a_tampered_signature_is_refused(s3_bucket: tuple[S3Client, str]) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="evidence.mp4", Body=b"frames")
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "evidence.mp4"}, ExpiresIn=300
    )
    signature = url.rsplit("X-Amz-Signature=", 1)[1][:64]
    tampered = url.replace(signature, signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    other_key = url.replace("evidence.mp4", "other.mp4")

    assert _http_get(url) == (200, b"frames")
    assert _http_get(tampered)[0] == 403
    assert _http_get(other_key)[0] == 403


def test_presigned_get_is_refused_after_it_expires(s3_bucket: tuple[S3Client, str]) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="short.mp4", Body=b"frames")
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "short.mp4"}, ExpiresIn=1
    )
    assert _http_get(url)[0] == 200

    time.sleep(2.1)  # the expiry is the event: X-Amz-Expires=1 from a whole-second X-Amz-Date

    assert _http_get(url)[0] == 403


def _locked_bucket(ceph_s3: CephS3) -> tuple[S3Client, str]:
    client = ceph_s3.client()
    bucket = f"lock-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return client, bucket


def _until(hours: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)


def test_compliance_retention_refuses_deleting_the_version(ceph_s3: CephS3) -> None:
    client, bucket = _locked_bucket(ceph_s3)
    put = client.put_object(
        Bucket=bucket,
        Key="clip.mp4",
        Body=b"evidence",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=_until(1),
    )
    version = put["VersionId"]

    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key="clip.mp4", VersionId=version)

    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert (
        client.get_object_retention(Bucket=bucket, Key="clip.mp4", VersionId=version)["Retention"]["Mode"]
        == "COMPLIANCE"
    )
    assert client.get_object(Bucket=bucket, Key="clip.mp4", VersionId=version)["Body"].read() == b"evidence"


def test_governance_retention_needs_an_explicit_bypass(ceph_s3: CephS3) -> None:
    client, bucket = _locked_bucket(ceph_s3)
    version = client.put_object(
        Bucket=bucket,
        Key="clip.mp4",
        Body=b"evidence",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=_until(1),
    )["VersionId"]

    with pytest.raises(ClientError):
        client.delete_object(Bucket=bucket, Key="clip.mp4", VersionId=version)
    client.delete_object(Bucket=bucket, Key="clip.mp4", VersionId=version, BypassGovernanceRetention=True)

    versions = client.list_object_versions(Bucket=bucket).get("Versions", [])
    assert [v["VersionId"] for v in versions] == []


# ---------------------------------------------------------------- the harness itself


def _processes_using(directory: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(directory) in cmdline and state != "Z":
            found.append(cmdline)
    return found


def test_second_ceph_cluster_starts_idempotently_and_stops_completely(tmp_path: Path) -> None:
    directory = tmp_path / "ceph2"
    with CephS3().start(directory) as gateway:
        again = CephS3().start(directory)  # "already running": same endpoint, no second cluster
        assert again.endpoint == gateway.endpoint
        assert len(_processes_using(directory)) == 3
        client = gateway.client()
        client.create_bucket(Bucket="second-cluster")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["second-cluster"]

    assert _processes_using(directory) == []
