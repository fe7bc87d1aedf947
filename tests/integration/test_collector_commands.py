"""The collector's signed commands, through its outbox and a real Mosquitto, to a real agent that verifies
them (camsim camera, Ceph S3), with the agent's answers ingested back into the collector's index.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from collector.commands.outbox import OutboxPublisher, enqueue
from collector.commands.signing import CommandSigner
from collector.config import CollectorSettings
from collector.index.store import Store, open_store
from collector.ingest.pipeline import Ingest
from collector.metrics import CollectorMetrics
from contract.messages import ClipRequest
from tests.integration.conftest import camera_fixture, clip_agent_settings, eventually, running
from tests.services import CephS3, Mosquitto

pytestmark = pytest.mark.integration

BASE_IP = "127.42.0.1"  # this module's camsim addresses
CAMERA_ID = "gangnam-00001"


camera = camera_fixture(BASE_IP)


def clip_request() -> ClipRequest:
    now = datetime.now(UTC)
    return ClipRequest(
        district="gangnam", request_id=f"req-{uuid.uuid4().hex[:12]}", camera_id=CAMERA_ID,
        start=now + timedelta(seconds=1), end=now + timedelta(seconds=3), purpose="assault in progress",
        agency="police-112", incident="112-20261205-0011", priority="112", service="112-video", sent_at=now,
    )  # fmt: skip


def outbox_answer(store: Store, request_id: str) -> str | None:
    with store.transaction() as tx:
        [(status,)] = tx.query("SELECT answer_status FROM command_outbox WHERE request_id = ?", (request_id,))
    return None if status is None else str(status)


def clip_state(store: Store, request_id: str) -> tuple[str, str | None] | None:
    found = [(c.status, c.reason) for c in store.clips() if c.request_id == request_id]
    return found[0] if found else None


async def test_a_real_agent_serves_the_collectors_command_and_refuses_an_impostors(
    camera: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str], tmp_path: Path
) -> None:
    client, bucket = s3_bucket
    url = f"sqlite://{tmp_path / 'collector' / 'index.db'}"
    settings = CollectorSettings(
        mqtt={"port": mosquitto.port}, store={"url": url}, ingest={"batch_ms": 20},
        commands={"republish_interval_s": 1.0},
    )  # fmt: skip
    signer = CommandSigner(settings.command_key_file, settings.commands.ttl_s)
    trusted = camera / "collector-public.pem"  # as `cctv-collector commands public-key` prints it
    trusted.write_bytes(signer.public_pem())
    impostor = CommandSigner(tmp_path / "impostor.key", settings.commands.ttl_s)
    store = open_store(url)
    store.migrate()
    ingest = Ingest(settings, CollectorMetrics())
    outbox = OutboxPublisher(settings, CollectorMetrics().registry, lambda: open_store(url))
    agent = Agent(
        clip_agent_settings(
            camera, mosquitto, ceph_s3, bucket, "gangnam-outbox", collector_public_keys=[trusted]
        )
    )
    try:
        ingest.start()
        outbox.start()
        async with running(agent, timeout_s=60):
            await eventually(
                lambda: (t := agent.camera_target(CAMERA_ID)) is not None and t.online, 20, "camera"
            )
            good, forged = signer.sign(clip_request()), impostor.sign(clip_request())
            with store.transaction() as tx:
                enqueue(tx, good)
                enqueue(tx, forged)
            outbox.notify()
            await eventually(
                lambda: clip_state(store, good.request_id) == ("succeeded", None), 40, "the clip"
            )
            await eventually(lambda: clip_state(store, forged.request_id) is not None, 10, "the refusal")
    finally:
        outbox.stop()
        ingest.stop()
    assert clip_state(store, forged.request_id) == ("failed", "unknown_key")
    assert outbox_answer(store, good.request_id) in ("accepted", "capturing")  # its first progress report
    assert outbox_answer(store, forged.request_id) == "failed"  # answered: no longer republished
    [row] = [c for c in store.clips() if c.request_id == good.request_id]
    listed = client.list_objects_v2(Bucket=bucket, Prefix="gangnam/").get("Contents", [])
    assert [o["Key"] for o in listed if o["Key"].endswith(".mp4")] == [row.object_key]  # the good one only
    store.close()
