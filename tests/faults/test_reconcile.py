"""Reconcile against what the real agent wrote: clips cut from a camsim camera by a running agent, delivered
to the real Ceph S3 gateway with their signed manifests, and `cctv-collector reconcile` run as a user runs it.

- The collector missed the clip updates (it was down, its session gone): reconcile indexes the clips from the
  manifests, with what the agent reported for them.
- `reconcile --rebuild` gives back the index it replaced; a rebuild that cannot read the bucket (S3 rejects
  the credentials) changes nothing and says so (exit 1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.app import Agent
from agent.config import AgentSettings
from collector.index.store import ClipRow, open_store
from contract import topics
from contract.codec import encode
from contract.messages import ClipRequest
from tests.collector.conftest import start_collector_process
from tests.integration.conftest import (
    Recorder,
    camera_fixture,
    clip_agent_settings,
    eventually,
    running,
)
from tests.services import CephS3, Mosquitto
from tests.signed_commands import collector_key_file, signed

CAMERA_ID = "gangnam-00001"
# What only one of the two ways into the index knows: the source, the update's time, the agency and
# incident (in the manifest, not in the MQTT update), and where the footage came from (in the update only).
PROVENANCE = ("source", "updated_at", "agency", "incident", "footage")


camera = camera_fixture("127.75.0.1")


def agent_settings(directory: Path, broker: Mosquitto, ceph: CephS3, bucket: str) -> AgentSettings:
    keys = [collector_key_file(directory)]
    return clip_agent_settings(directory, broker, ceph, bucket, "gangnam-faults", collector_public_keys=keys)


async def agent_delivers_clips(
    settings: AgentSettings, broker: Mosquitto, count: int
) -> list[dict[str, Any]]:
    """Run the agent, ask it for `count` clips of its camera, and return the `succeeded` updates it sent."""
    recorder = Recorder(broker.port)
    try:
        async with running(Agent(settings), timeout_s=60):
            status = topics.camera_status("gangnam", CAMERA_ID)
            await eventually(
                lambda: (recorder.get(status) or {}).get("state") == "online", 20, "camera online"
            )
            now = datetime.now(UTC)
            requests = [clip_request(now + timedelta(seconds=0.5 + n)) for n in range(count)]
            for request in requests:
                delivery = encode(request)
                recorder.client.publish(delivery.topic, delivery.payload, qos=1)
            results = [topics.clip("gangnam", r.request_id) for r in requests]
            final = ("succeeded", "failed")
            await eventually(
                lambda: all((recorder.get(t) or {}).get("status") in final for t in results),
                40,
                "clip results",
            )
            updates = [recorder.get(t) or {} for t in results]
    finally:
        recorder.close()
    assert [u["status"] for u in updates] == ["succeeded"] * count, updates
    return updates


def clip_request(start: datetime) -> ClipRequest:
    return signed(ClipRequest(
        district="gangnam", request_id=f"req-{uuid.uuid4().hex[:12]}", camera_id=CAMERA_ID, start=start,
        end=start + timedelta(seconds=1.5), purpose="fault suite", agency="police-112",
        incident="112-20261205-0042", priority="112", sent_at=datetime.now(UTC),
    ))  # fmt: skip


def reconcile_cli(config: Path, ceph: CephS3, bucket: str, *args: str, secret: str | None = None) -> Any:
    """`cctv-collector reconcile --json ARGS` in its own process, as an operator runs it."""
    env = {**os.environ, "COLLECTOR__S3__ENDPOINT_URL": ceph.endpoint, "COLLECTOR__S3__BUCKET": bucket,
           "COLLECTOR__S3__REGION": ceph.region, "COLLECTOR__S3__ACCESS_KEY": ceph.access_key,
           "COLLECTOR__S3__SECRET_KEY": secret or ceph.secret_key}  # fmt: skip
    code = "import sys; from collector.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, "reconcile", "--config", str(config), "--json", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def clips(store_url: str) -> dict[str, ClipRow]:
    store = open_store(store_url)
    try:
        return {c.request_id: c for c in store.clips()}
    finally:
        store.close()


def facts(row: ClipRow) -> ClipRow:
    """A row without its provenance: what the clip is, where it is, what it covers."""
    return dataclasses.replace(row, **dict.fromkeys(PROVENANCE))  # type: ignore[arg-type]


async def test_reconcile_indexes_the_clips_the_collector_missed(
    camera: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    _, bucket = s3_bucket
    # No collector is listening: every clip update is lost to it.
    updates = await agent_delivers_clips(agent_settings(camera, mosquitto, ceph_s3, bucket), mosquitto, 2)
    store_url = f"sqlite://{camera / 'index.db'}"
    config = camera / "collector.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n')

    done = reconcile_cli(config, ceph_s3, bucket)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["indexed"] == 2 and report["counts"]["invalid_manifests"] == 0, report
    rows = clips(store_url)
    assert sorted(rows) == sorted(u["request_id"] for u in updates)
    for update in updates:
        row = rows[update["request_id"]]
        assert (row.status, row.source, row.camera_id, row.district, row.agent_id) == (
            "succeeded", "manifest", CAMERA_ID, "gangnam", "gangnam-faults",
        )  # fmt: skip
        reported = (update["object_key"], update["thumbnail_key"], update["manifest_key"],
                    update["sha256"], update["size_bytes"])  # fmt: skip
        assert (row.object_key, row.thumbnail_key, row.manifest_key, row.sha256, row.size_bytes) == reported
        assert row.covered_start == datetime.fromisoformat(update["covered_start"]).timestamp()
        assert row.covered_end == datetime.fromisoformat(update["covered_end"]).timestamp()
        assert (row.agency, row.incident, row.missing_object) == ("police-112", "112-20261205-0042", False)


async def test_rebuild_gives_back_the_index_it_replaced(
    camera: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    _, bucket = s3_bucket
    collector, _, _ = start_collector_process(camera, mosquitto)
    store_url = f"sqlite://{camera / 'run.db'}"
    try:
        updates = await agent_delivers_clips(agent_settings(camera, mosquitto, ceph_s3, bucket), mosquitto, 2)
        ids = sorted(u["request_id"] for u in updates)

        def indexed() -> bool:
            rows = clips(store_url)
            return sorted(rows) == ids and all(r.status == "succeeded" for r in rows.values())

        await eventually(indexed, 10, "the collector indexing both clips")
    finally:
        collector.send_signal(signal.SIGTERM)
        await asyncio.to_thread(collector.wait, 30)
    before = clips(store_url)
    config = camera / "collector.toml"

    refused = reconcile_cli(config, ceph_s3, bucket, "--rebuild", secret="not-the-secret")
    assert refused.returncode == 1 and "index is unchanged" in refused.stderr, refused.stderr
    assert clips(store_url) == before

    done = reconcile_cli(config, ceph_s3, bucket, "--rebuild")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rebuild"] == {"replaced": 2, "refused": None} and sorted(report["indexed"]) == ids
    after = clips(store_url)
    assert {k: facts(r) for k, r in after.items()} == {k: facts(r) for k, r in before.items()}
    assert all((r.source, r.agency) == ("manifest", "police-112") for r in after.values())
