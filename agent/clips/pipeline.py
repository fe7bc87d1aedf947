"""One clip's way from camera to bucket: capture while the upload streams, thumbnail, signed manifest, result.

Result convention (ClipUpdate): `succeeded` carries the object keys, size, sha256 and the window the video
actually covers. A clip shorter than asked (stream lost, agent restarted mid-capture) is still `succeeded`,
with `reason` starting with "partial:" and covered_start/covered_end saying what it holds. `failed` means no
clip exists, and `reason` says why. While S3 is unreachable the clip waits in the spool and the collector
gets `uploading` with a reason starting with "waiting for storage:".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agent import __version__
from agent.clips.blocked import UploadBlock
from agent.clips.manifest import build_manifest, file_digest, manifest_json
from agent.clips.metrics import ClipMetrics
from agent.clips.outbox import Outbox
from agent.clips.s3 import UploadError, clip_keys
from agent.clips.spool import CaptureInfo, Job, Spool
from agent.clips.stream import TimeSource
from agent.clips.upload import ObjectLock, Uploader, UploadJob, UploadResult, upload_rank
from agent.provisions import ProvisionLedger
from contract.manifest import Manifest
from contract.messages import ClipStatusName, ClipUpdate

log = logging.getLogger(__name__)

PARTIAL_RESTART = "partial: stream lost / agent restarted"
Recover = Callable[[Path], tuple[int, datetime | None, datetime | None]]
Signer = Callable[[Manifest], Manifest]
T = TypeVar("T")


class CaptureOutcome(Protocol):
    """The capture side's CaptureResult (agent/clips/capture.py), as far as delivery needs it."""

    @property
    def covered_start(self) -> datetime | None: ...
    @property
    def covered_end(self) -> datetime | None: ...
    @property
    def wallclock_source(self) -> TimeSource: ...
    @property
    def wallclock_uncertainty_s(self) -> float | None: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def codec(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def thumbnail_jpeg(self) -> bytes | None: ...
    @property
    def complete(self) -> bool: ...
    @property
    def error(self) -> str | None: ...


class CapturePool(Protocol):
    """The capture side's SessionPool, as far as delivery needs it."""

    def arm(
        self, camera_id: str, url: str, duration_s: float, clock_offset_s: float | None = None
    ) -> None: ...
    def earliest_buffered(self, camera_id: str) -> datetime | None: ...
    def hold(self, camera_id: str, key: str, start: datetime) -> None: ...
    def release_hold(self, camera_id: str, key: str) -> None: ...
    def capture(
        self, camera_id: str, url: str, start: datetime, end: datetime, out_path: Path, *,
        clock_offset_s: float | None = None, cancel: threading.Event | None = None,
    ) -> CaptureOutcome: ...  # fmt: skip


@dataclass(frozen=True)
class CameraTarget:
    """A camera as the clip service sees it. The RTSP URL carries credentials and never leaves the agent."""

    camera_id: str
    rtsp_url: str = field(repr=False)
    online: bool
    clock_offset_s: float | None = None
    meta: Mapping[str, str] = field(default_factory=dict)  # manufacturer, model, firmware: for the manifest


class Reporter:
    """Builds ClipUpdates and hands them to the persistent outbox."""

    def __init__(self, district: str, agent_id: str, outbox: Outbox, metrics: ClipMetrics) -> None:
        self._district, self._agent_id, self._outbox, self._metrics = district, agent_id, outbox, metrics

    def send(self, request_id: str, camera_id: str, status: ClipStatusName, **fields: Any) -> None:
        update = ClipUpdate(
            district=self._district, request_id=request_id, camera_id=camera_id, agent_id=self._agent_id,
            status=status, sent_at=datetime.now(UTC), **fields,
        )  # fmt: skip
        self._outbox.put(update)
        self._metrics.outbox_pending.set(self._outbox.pending())

    def failed(self, request_id: str, camera_id: str, reason: str) -> None:
        self.send(request_id, camera_id, "failed", reason=reason[:500])


class Pipeline:
    def __init__(
        self,
        *,
        spool: Spool,
        uploader: Uploader,
        reporter: Reporter,
        pool: CapturePool,
        lookup: Callable[[str], CameraTarget | None],
        signer: Signer,
        recover: Recover,
        bucket: str,
        lock: ObjectLock | None,
        district: str,
        agent_id: str,
        metrics: ClipMetrics,
        provisions: ProvisionLedger,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 4,
    ) -> None:
        self._clock = clock  # the manifest's created_at
        # Each capture worker blocks a thread on the capture and one on the streaming upload beside it (then
        # the thumbnail, then delivery); the retry loop delivers one more. asyncio's default pool (cpu + 4
        # threads) is too small for that: an upload that waited for a thread until its capture ended sent the
        # whole clip after the window's end instead of streaming it.
        self._threads = ThreadPoolExecutor(2 * workers + 2, thread_name_prefix="clip")
        self._provisions = provisions
        self._spool, self._uploader, self._reporter, self._pool = spool, uploader, reporter, pool
        self._lookup, self._signer, self._recover = lookup, signer, recover
        self._bucket, self._lock, self._district, self._agent_id = bucket, lock, district, agent_id
        self._metrics = metrics
        self.block = UploadBlock(metrics.uploads_blocked)

    def close(self) -> None:
        self._threads.shutdown(wait=False)

    def _thread(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Run a blocking call on the pipeline's own threads."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._threads, functools.partial(call, *args, **kwargs))

    async def run(self, job: Job, cancel: threading.Event) -> bool:
        """Capture and deliver one queued job. True when finished (delivered or failed for good); False when
        the clip is captured and waits in the spool for S3."""
        finished, give_up = threading.Event(), threading.Event()
        try:
            target = self._lookup(job.request.camera_id)
            if target is None:
                self._fail(job, "unknown camera")
                return True
            job.state = "capturing"
            self._spool.save(job)
            self._reporter.send(job.request_id, job.request.camera_id, "capturing", source=job.source)
            upload = self._thread(self._uploader.upload_file, self._clip_upload(job), finished, give_up)
            captured = await self._capture(job, target, cancel)
        finally:  # the capture has taken the buffer admission held for it (or failed)
            self._pool.release_hold(job.request.camera_id, job.request_id)
        if not captured:
            give_up.set()
            finished.set()
            with contextlib.suppress(UploadError):
                await upload
            return True
        finished.set()
        self._reporter.send(job.request_id, job.request.camera_id, "uploading")
        thumbnail = self._thread(self._put_thumbnail, job)  # beside the last part
        try:
            result = await upload
        except UploadError as exc:
            with contextlib.suppress(UploadError, OSError):
                await thumbnail
            self.note_upload_failure(job, exc)
            return False
        with contextlib.suppress(UploadError, OSError):
            await thumbnail  # if it failed, delivery puts it again before the manifest
        self._record_clip(job, result)
        return await self.deliver(job)

    async def deliver(self, job: Job) -> bool:
        """Upload what is not in S3 yet (clip, thumbnail, manifest) and report success. False: try later."""
        try:
            await self._thread(self._deliver, job)
        except UploadError as exc:
            self.note_upload_failure(job, exc)
            return False
        except OSError as exc:  # the spool's disk (full, gone): the clip stays where it is; try again later
            self.note_upload_failure(job, UploadError(f"spool: {exc}", transient=True, last_exception=exc))
            return False
        self.block.accepted()
        capture = job.capture or CaptureInfo()
        # The hand-over is recorded, then the result stored in the outbox, then the job marked `uploaded`: a
        # crash between them leaves a `captured` job with every key set, which a restart delivers again (the
        # ledger and the collector both keep one row per request). The other order lost the result:
        # `uploaded` jobs are never resumed.
        self._provisions.record(
            job.request, object_key=job.object_key, sha256=capture.sha256 or None,
            size_bytes=capture.size_bytes, covered=(capture.covered_start, capture.covered_end),
        )  # fmt: skip
        self._reporter.send(
            job.request_id, job.request.camera_id, "succeeded", reason=job.partial_reason,
            object_key=job.object_key, thumbnail_key=job.thumbnail_key, manifest_key=job.manifest_key,
            size_bytes=capture.size_bytes, sha256=capture.sha256 or None,
            covered_start=capture.covered_start, covered_end=capture.covered_end, source=job.source,
        )  # fmt: skip
        job.state = "uploaded"
        self._spool.save(job)
        return True

    def recover_interrupted(self, job: Job, reason: str = PARTIAL_RESTART) -> bool:
        """A capture that never finished (crash, SIGKILL): keep its complete fragments. False if none."""
        path = self._spool.clip_path(job.request_id)
        try:
            valid, covered_start, covered_end = self._recover(path)
        except (OSError, ValueError) as exc:
            log.warning("clip %s cannot be recovered: %s", job.request_id, exc)
            return False
        if valid <= 0:
            return False
        os.truncate(path, valid)
        job.capture = CaptureInfo(
            covered_start=covered_start, covered_end=covered_end, size_bytes=valid, complete=False,
            error=reason,
        )  # fmt: skip
        job.partial_reason = reason
        job.state = "captured"
        self._spool.save(job)
        self._metrics.captures.labels("partial").inc()
        return True

    def note_upload_failure(self, job: Job, exc: UploadError) -> None:
        job.upload_attempts += 1
        self._spool.save(job)
        self._metrics.uploads.labels("retry").inc()
        if exc.blocked is not None:
            self.block.refused(exc.blocked, str(exc))
        log.warning("upload of clip %s failed (attempt %s): %s", job.request_id, job.upload_attempts, exc)
        if job.upload_attempts == 1:
            reason = f"waiting for storage: {exc}"[:500]
            self._reporter.send(job.request_id, job.request.camera_id, "uploading", reason=reason)

    async def _capture(self, job: Job, target: CameraTarget, cancel: threading.Event) -> bool:
        """Run the capture; record what it produced. False (and reported) if there is no video."""
        request, path = job.request, self._spool.clip_path(job.request_id)
        try:
            outcome = await self._thread(
                self._pool.capture, target.camera_id, target.rtsp_url, request.start, request.end, path,
                clock_offset_s=target.clock_offset_s, cancel=cancel,
            )  # fmt: skip
        except Exception as exc:  # a capture bug must not lose what was written: keep complete fragments
            log.exception("capture of clip %s raised", job.request_id)
            return self._capture_crashed(job, f"partial: capture error ({type(exc).__name__})")
        finally:
            self._spool.release(job.request_id)
        if outcome.size_bytes <= 0:
            self._metrics.captures.labels("failed").inc()
            self._fail(job, f"capture failed: {outcome.error or 'no video received'}")
            return False
        job.capture = _info(outcome)
        if not outcome.complete:
            job.partial_reason = f"partial: {outcome.error or 'stream ended early'}"[:500]
        if outcome.thumbnail_jpeg:
            self._spool.thumbnail_path(job.request_id).write_bytes(outcome.thumbnail_jpeg)
        job.state = "captured"
        self._spool.save(job)
        self._metrics.captures.labels("complete" if outcome.complete else "partial").inc()
        return True

    def _capture_crashed(self, job: Job, reason: str) -> bool:
        if self.recover_interrupted(job, reason):
            return True
        self._metrics.captures.labels("failed").inc()
        self._fail(job, "capture failed: no video received")
        return False

    def _fail(self, job: Job, reason: str) -> None:
        job.state = "failed"
        self._spool.save(job)  # its last write: the failed-clip retention counts from here
        self._spool.release(job.request_id)  # e.g. its camera vanished before the capture: free the room
        with contextlib.suppress(FileNotFoundError):
            self._spool.clip_path(job.request_id).unlink()
        self._reporter.failed(job.request_id, job.request.camera_id, reason)

    def _deliver(self, job: Job) -> None:
        """Blocking (worker thread). The manifest goes last: in the bucket it says the clip and its thumbnail
        are there (the collector's reconcile indexes a clip from it). A clip sent whole (a retry) is saved at
        once, so it is not sent again; the small objects are saved together, before the result is stored (a
        crash before that only puts them again)."""
        if job.object_key is None:
            done = threading.Event()
            done.set()
            upload = self._clip_upload(job)
            self._uploader.abort_stale(upload)  # what an interrupted attempt left
            self._record_clip(job, self._uploader.upload_file(upload, done))
            self._spool.save(job)
        self._put_thumbnail(job)
        if job.manifest_key is None:
            key = self._keys(job).manifest
            body = manifest_json(self._signer(self._manifest(job)))
            self._uploader.put_bytes(self._side_upload(job, key, "application/json"), body)
            job.manifest_key = key
        self._spool.save(job)

    def _put_thumbnail(self, job: Job) -> None:
        """Blocking: put the thumbnail, if there is one and it is not in S3 yet. Raises UploadError."""
        thumbnail = self._spool.thumbnail_path(job.request_id)
        if job.thumbnail_key is None and thumbnail.exists():
            key = self._keys(job).thumbnail
            self._uploader.put_bytes(self._side_upload(job, key, "image/jpeg"), thumbnail.read_bytes())
            job.thumbnail_key = key

    def _record_clip(self, job: Job, result: UploadResult) -> None:
        capture = job.capture or CaptureInfo()
        if capture.sha256 and capture.sha256 != result.sha256 and capture.size_bytes == result.size_bytes:
            log.error("clip %s: capture digest differs from the uploaded bytes'", job.request_id)
        job.capture = capture.model_copy(update={"size_bytes": result.size_bytes, "sha256": result.sha256})
        job.object_key = result.key
        self.block.accepted()
        self._metrics.uploads.labels("succeeded").inc()
        self._metrics.completion.observe(max(0.0, time.time() - job.request.end.timestamp()))

    def _keys(self, job: Job) -> Any:
        request = job.request
        return clip_keys(self._district, request.camera_id, request.start, request.request_id)

    def _clip_upload(self, job: Job) -> UploadJob:
        request = job.request
        metadata = {"request-id": request.request_id, "camera-id": request.camera_id,
                    "district": self._district, "priority": request.priority}  # fmt: skip
        return UploadJob(
            self._bucket, self._keys(job).clip, self._spool.clip_path(job.request_id),
            upload_rank(request.priority), metadata, "video/mp4", self._lock,
        )  # fmt: skip

    def _side_upload(self, job: Job, key: str, content_type: str) -> UploadJob:
        path = self._spool.clip_path(job.request_id)
        rank = upload_rank(job.request.priority)
        metadata = {"request-id": job.request_id}
        return UploadJob(self._bucket, key, path, rank, metadata, content_type, self._lock)

    def _manifest(self, job: Job) -> Manifest:
        request, capture = job.request, job.capture or CaptureInfo()
        target = self._lookup(request.camera_id)
        camera = {"id": request.camera_id, **(dict(target.meta) if target is not None else {})}
        keys = self._keys(job)
        thumbnail = self._spool.thumbnail_path(job.request_id)
        objects = {"clip": keys.clip, "manifest": keys.manifest}
        if job.thumbnail_key:
            objects["thumbnail"] = job.thumbnail_key
        return build_manifest(
            camera=camera, district=self._district, request_id=request.request_id, agency=request.agency,
            incident=request.incident, purpose=request.purpose, requested=(request.start, request.end),
            covered=(capture.covered_start, capture.covered_end), wallclock_source=capture.wallclock_source,
            wallclock_uncertainty_s=capture.wallclock_uncertainty_s,
            clock_offset_s=target.clock_offset_s if target is not None else None, agent_id=self._agent_id,
            software_version=__version__, objects=objects, clip=(capture.sha256, capture.size_bytes),
            thumbnail=file_digest(thumbnail) if job.thumbnail_key else None, complete=capture.complete,
            created_at=self._clock(),
        )  # fmt: skip


def _info(outcome: CaptureOutcome) -> CaptureInfo:
    return CaptureInfo(
        covered_start=outcome.covered_start, covered_end=outcome.covered_end,
        wallclock_source=outcome.wallclock_source, wallclock_uncertainty_s=outcome.wallclock_uncertainty_s,
        size_bytes=outcome.size_bytes, sha256=outcome.sha256,
        codec=outcome.codec, width=outcome.width, height=outcome.height, complete=outcome.complete,
        error=outcome.error,
    )  # fmt: skip
