"""The golden manifest is what the agent's real delivery code writes for a real clip, and what the collector
reads back: one schema (contract/manifest.py) on both sides.

The clip (golden_manifest/clip.mp4, its thumbnail and the capture's result) was captured from camsim by the
agent's capture code (golden_manifest/recapture.py). Here the agent's Pipeline delivers it: it builds and
signs the manifest (with a fixed test key and clock, so the bytes are reproducible; Ed25519 signing is
deterministic). `UPDATE_GOLDEN=1` rewrites golden_manifest/clip.manifest.json when it changes on purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clips.manifest import public_key_pem, sign_manifest, verify
from agent.clips.metrics import ClipMetrics
from agent.clips.pipeline import CameraTarget, Pipeline
from agent.clips.spool import CaptureInfo, Job, Spool
from agent.clips.upload import UploadJob, UploadResult
from collector.reconcile import manifest_row
from collector.store import Batch
from contract.manifest import parse_manifest
from contract.messages import ClipRequest, ClipUpdate

HERE = Path(__file__).parent / "golden_manifest"
GOLDEN = HERE / "clip.manifest.json"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a test key, for reproducible signatures
META = {"manufacturer": "Hanwha Vision", "model": "XNO-6080R", "firmware": "2.10.1"}


class RecordingUploader:
    """Stands in for S3: records each object's bytes (the real Uploader is tested against Ceph)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def upload_file(
        self, job: UploadJob, finished: threading.Event, cancel: threading.Event | None = None
    ) -> UploadResult:
        body = job.path.read_bytes()
        self.objects[job.key] = body
        return UploadResult(job.key, len(body), hashlib.sha256(body).hexdigest(), 1, 0.0)

    def put_bytes(self, job: UploadJob, body: bytes) -> None:
        self.objects[job.key] = body


class RecordingReporter:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def send(self, request_id: str, camera_id: str, status: str, **fields: Any) -> None:
        self.updates.append({"request_id": request_id, "camera_id": camera_id, "status": status, **fields})


async def deliver_golden_clip(tmp_path: Path) -> tuple[RecordingUploader, dict[str, Any]]:
    """The agent's Pipeline.deliver on the golden clip; (what it uploaded, the `succeeded` it reported)."""
    request = ClipRequest.model_validate_json((HERE / "request.json").read_bytes())
    capture = CaptureInfo.model_validate_json((HERE / "capture.json").read_bytes())
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    spool.clip_path(request.request_id).write_bytes((HERE / "clip.mp4").read_bytes())
    spool.thumbnail_path(request.request_id).write_bytes((HERE / "clip.jpg").read_bytes())
    job = Job(request=request, state="captured", capture=capture)
    target = CameraTarget(request.camera_id, "rtsp://admin:secret@127.75.9.1/stream1", online=True,
                          clock_offset_s=0.0421, meta=META)  # fmt: skip
    uploader, reporter = RecordingUploader(), RecordingReporter()
    pipeline = Pipeline(
        spool=spool, uploader=uploader, reporter=reporter, pool=None, lookup=lambda _: target,  # type: ignore[arg-type]
        signer=lambda manifest: sign_manifest(manifest, KEY), recover=lambda _: (0, None, None),
        bucket="evidence", lock=None, district=request.district, agent_id="gangnam-agent-1",
        metrics=ClipMetrics(), clock=lambda: request.end + timedelta(seconds=3),
    )  # fmt: skip
    assert await pipeline.deliver(job)
    [succeeded] = [u for u in reporter.updates if u["status"] == "succeeded"]
    return uploader, succeeded


async def test_the_golden_manifest_is_what_the_agent_writes(tmp_path: Path) -> None:
    uploader, succeeded = await deliver_golden_clip(tmp_path)
    written = uploader.objects[succeeded["manifest_key"]]
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_bytes(written)
    assert written == GOLDEN.read_bytes(), "the agent writes another manifest: UPDATE_GOLDEN=1 if on purpose"
    golden = json.loads(GOLDEN.read_bytes())
    assert verify(HERE / "clip.mp4", golden, public_key_pem(KEY), thumbnail=HERE / "clip.jpg") == []
    assert b"secret" not in written and b"127.75" not in written  # the camera's address stays in the agent


async def test_the_collector_indexes_the_golden_manifest_as_the_agent_reported_it(tmp_path: Path) -> None:
    """The row reconcile builds from the manifest holds what the collector indexes from the agent's
    `succeeded` update: the same clip, keys, digest and covered window."""
    _, succeeded = await deliver_golden_clip(tmp_path)
    manifest = parse_manifest(GOLDEN.read_bytes())
    keys = {manifest.objects["clip"], manifest.objects["thumbnail"]}
    from_manifest = manifest_row(manifest, succeeded["manifest_key"], present=keys)
    update = ClipUpdate(
        district="gangnam", agent_id="gangnam-agent-1", sent_at=manifest.created_at, **succeeded
    )
    batch = Batch()
    batch.add(update)
    [from_mqtt] = batch.clips
    same = {"source", "agency", "incident", "updated_at"}  # what only one of the two paths knows
    assert dataclasses.replace(from_manifest, **{f: getattr(from_mqtt, f) for f in same}) == from_mqtt
    assert (from_manifest.agency, from_manifest.incident) == ("police-112", "112-20261205-0001")
    assert not from_manifest.missing_object and from_manifest.source == "manifest"
