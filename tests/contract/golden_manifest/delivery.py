"""The agent's Pipeline delivering the recorded clip (clip.mp4, captured from camsim by the agent's capture
code): the golden manifest test records what it uploads; the collector's reconcile tests deliver it to Ceph.

Not a test module; the manifest is built and signed by the agent's real code, with a fixed key and clock.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clips.manifest import sign_manifest
from agent.clips.metrics import ClipMetrics
from agent.clips.pipeline import CameraTarget, Pipeline
from agent.clips.spool import CaptureInfo, Job, Spool
from agent.clips.upload import UploadJob, UploadResult
from agent.provisions import ProvisionLedger, ledger_path
from contract.messages import ClipRequest

HERE = Path(__file__).parent
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a test key, for reproducible signatures
META = {"manufacturer": "Hanwha Vision", "model": "XNO-6080R", "firmware": "2.10.1"}
AGENT_ID = "gangnam-agent-1"


class ClipUploader(Protocol):
    def upload_file(
        self, job: UploadJob, finished: threading.Event, cancel: threading.Event | None = None
    ) -> UploadResult: ...
    def put_bytes(self, job: UploadJob, body: bytes) -> None: ...
    def abort_stale(self, job: UploadJob) -> int: ...


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

    def abort_stale(self, job: UploadJob) -> int:
        return 0  # nothing is ever left unfinished here

    def put_bytes(self, job: UploadJob, body: bytes) -> None:
        self.objects[job.key] = body


class RecordingReporter:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def send(self, request_id: str, camera_id: str, status: str, **fields: Any) -> None:
        self.updates.append({"request_id": request_id, "camera_id": camera_id, "status": status, **fields})


def recorded_request(request_id: str | None = None, start: datetime | None = None) -> ClipRequest:
    """The recorded clip's request, optionally under another id or start (the start names the S3 keys)."""
    request = ClipRequest.model_validate_json((HERE / "request.json").read_bytes())
    update: dict[str, Any] = {}
    if request_id is not None:
        update["request_id"] = request_id
    if start is not None:
        update |= {"start": start, "end": start + (request.end - request.start)}
    return request.model_copy(update=update)


async def deliver_recorded_clip(
    spool_dir: Path, uploader: ClipUploader, bucket: str = "evidence", request: ClipRequest | None = None
) -> dict[str, Any]:
    """Run the agent's Pipeline.deliver on the recorded clip; the `succeeded` update it reported."""
    request = request or recorded_request()
    capture = CaptureInfo.model_validate_json((HERE / "capture.json").read_bytes())
    spool = Spool(spool_dir, max_bytes=10**9)
    spool.clip_path(request.request_id).write_bytes((HERE / "clip.mp4").read_bytes())
    spool.thumbnail_path(request.request_id).write_bytes((HERE / "clip.jpg").read_bytes())
    job = Job(request=request, state="captured", capture=capture)
    target = CameraTarget(request.camera_id, "rtsp://admin:secret@127.75.9.1/stream1", online=True,
                          clock_offset_s=0.0421, meta=META)  # fmt: skip
    reporter = RecordingReporter()
    pipeline = Pipeline(
        spool=spool, uploader=uploader, reporter=reporter, pool=None, lookup=lambda _: target,  # type: ignore[arg-type]
        signer=lambda manifest: sign_manifest(manifest, KEY), recover=lambda _: (0, None, None),
        bucket=bucket, lock=None, district=request.district, agent_id=AGENT_ID, metrics=ClipMetrics(),
        provisions=ProvisionLedger(ledger_path(spool_dir)), clock=lambda: request.end + timedelta(seconds=3),
    )  # fmt: skip
    assert await pipeline.deliver(job)
    [succeeded] = [u for u in reporter.updates if u["status"] == "succeeded"]
    return succeeded
