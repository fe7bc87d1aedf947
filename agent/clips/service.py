"""The agent's clip service: the facade that takes clip and arm commands and runs the parts delivering clips.

The parts, one job each: admission.py (duplicate, the district's command policy of agent/command_policy.py,
refusal with its reason, spool admission), captures.py (the priority queue and its capture workers), retry.py
(upload retries of spooled clips, spool housekeeping), and the pipeline (capture, upload, manifest, the
provision ledger of agent/provisions.py, result). Uploads share one scheduler that orders parts by priority
under the district's bandwidth cap. An arm command passes the same policy before a camera is armed.

Lifecycle: `start()` opens the outbox, resumes what the spool holds (partial captures from a crash are cut to
their last complete fragment and delivered), then starts the workers. `handle()` is called on the event loop
for every valid command (agent/commands.py drops malformed ones unanswered). `stop(grace_s)` stops taking
work, lets running captures finish within the grace period, cancels the rest (their partial clips stay in the
spool and are delivered on the next start), and flushes the outbox briefly; what is not acknowledged stays on
disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry

from agent.clips.admission import Admission
from agent.clips.captures import CaptureQueue
from agent.clips.metrics import ClipMetrics
from agent.clips.outbox import Outbox, Publish
from agent.clips.pipeline import CameraTarget, CapturePool, Pipeline, Recover, Reporter, Signer
from agent.clips.retry import UploadRetry
from agent.clips.s3 import make_client
from agent.clips.settings import ClipBucketSettings, ClipSettings
from agent.clips.spool import Job, Spool
from agent.clips.upload import ObjectLock, Uploader, UploadScheduler
from agent.command_policy import CommandPolicy, refusal
from agent.provisions import ProvisionLedger, ledger_path
from contract.messages import ArmRequest, ClipRequest

log = logging.getLogger(__name__)

__all__ = ["CameraTarget", "ClipService"]


class ClipService:
    def __init__(
        self,
        settings: ClipSettings,
        s3: ClipBucketSettings,
        *,
        district: str,
        agent_id: str,
        pool: CapturePool,
        publish: Publish,
        policy: CommandPolicy,
        camera_lookup: Callable[[str], CameraTarget | None],
        metrics_registry: CollectorRegistry | None = None,
        s3_client: Any = None,
        scheduler: UploadScheduler | None = None,
        recover: Recover | None = None,
        signer: Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self._s3, self._district, self._agent_id = settings, s3, district, agent_id
        self._pool, self._publish, self._lookup, self._policy = pool, publish, camera_lookup, policy
        self.metrics = ClipMetrics(metrics_registry)
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes, settings.failed_retention_s)
        self._clock = clock  # wall clock (epoch seconds) of retention; injectable for tests
        if scheduler is None:
            scheduler = UploadScheduler(settings.max_concurrent_parts, settings.upload_bandwidth_bps)
        self._uploader = Uploader(
            s3_client or make_client(s3), scheduler, settings.part_size_bytes,
            on_bytes=self.metrics.uploaded_bytes.inc,
        )  # fmt: skip
        self._recover, self._signer = recover, signer
        self._jobs: dict[str, Job] = {}  # the jobs being captured or uploaded, shared by the parts
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: Outbox | None = None
        self._provisions: ProvisionLedger | None = None
        self._parts: _Parts | None = None

    @property
    def uploader(self) -> Uploader:
        """The agent's uploader (its S3 client and the shared scheduler), for live segments too."""
        return self._uploader

    # lifecycle

    async def start(self) -> None:
        outbox = self._outbox = Outbox(
            self.settings.spool_dir / "outbox.sqlite3", self._publish,
            republish_after_s=self.settings.republish_after_s,
            seen_retention_s=self.settings.seen_ids_retention_s, clock=self._clock,
        )  # fmt: skip
        reporter = Reporter(self._district, self._agent_id, outbox, self.metrics)
        provisions = self._provisions = ProvisionLedger(ledger_path(self.settings.spool_dir))
        signer = self._signer if self._signer is not None else await asyncio.to_thread(self._default_signer)
        pipeline = Pipeline(
            spool=self.spool, uploader=self._uploader, reporter=reporter, pool=self._pool,
            lookup=self._lookup, signer=signer,
            recover=self._recover or _default_recover(), bucket=self._s3.bucket, lock=self._object_lock(),
            district=self._district, agent_id=self._agent_id, metrics=self.metrics, provisions=provisions,
            workers=self.settings.max_concurrent_captures,
        )  # fmt: skip
        retry = UploadRetry(
            self.settings, self._jobs, spool=self.spool, outbox=outbox, pipeline=pipeline,
            metrics=self.metrics, clock=self._clock,
        )  # fmt: skip
        captures = CaptureQueue(self._jobs, self.metrics, after_attempt=retry.after_attempt)
        admission = Admission(
            self.settings, policy=self._policy, spool=self.spool, pool=self._pool, lookup=self._lookup,
            outbox=outbox, reporter=reporter, metrics=self.metrics, enqueue=captures.enqueue,
        )  # fmt: skip
        self._parts = parts = _Parts(reporter, pipeline, admission, captures, retry)
        self._resume_spool(parts)
        self._tasks = [asyncio.create_task(outbox.run(self._stop), name="clip-outbox")]
        captures.start(pipeline, self.settings.max_concurrent_captures)
        self._tasks.append(asyncio.create_task(retry.run(self._stop), name="clip-upload-retry"))
        retry.refresh_gauges()

    async def stop(self, grace_s: float | None = None) -> None:
        """`grace_s` (default `shutdown_grace_s`): how long running captures may take to finish."""
        if grace_s is None:
            grace_s = self.settings.shutdown_grace_s
        self._stop.set()
        if self._parts is not None:
            await self._parts.captures.stop(grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._parts is not None:
            self._parts.pipeline.close()
        if self._outbox is not None:
            await self._outbox.drain(min(2.0, max(0.1, grace_s)))
            self._outbox.close()
        if self._provisions is not None:
            self._provisions.close()

    # commands

    def handle(self, command: ClipRequest | ArmRequest) -> None:
        """One valid command (agent/commands.py admits them), on the event loop. Never raises."""
        try:
            assert self._parts is not None, "handle() before start()"
            if isinstance(command, ClipRequest):
                self._parts.admission.admit(command)
            else:
                self._on_arm(command)
        except Exception:  # a bug in one command must not stop the command loop
            log.exception("command %s failed", command.request_id)

    def _on_arm(self, request: ArmRequest) -> None:
        refused = refusal(request, self._policy, datetime.now(UTC))
        if refused is not None:  # ArmRequest has no answer: counted and logged
            self.metrics.commands_refused.labels(refused).inc()
            log.warning("arm %s of camera %s refused: %s", request.request_id, request.camera_id, refused)
            return
        target = self._lookup(request.camera_id)
        if target is None or not target.online:
            log.info("arm of camera %s ignored: unknown or offline", request.camera_id)
            return
        self._pool.arm(target.camera_id, target.rtsp_url, request.duration_s, target.clock_offset_s)

    # restart

    def _resume_spool(self, parts: _Parts) -> None:
        """Before the workers start: pick up what a previous run left (see spool.py). Reads partial clips;
        blocks the loop briefly, once."""
        now = datetime.now(UTC)
        for job in self.spool.jobs():
            if job.state == "queued" and job.request.end > now:
                parts.captures.enqueue(job)
            elif job.state == "queued":
                self._resume_failed(parts.reporter, job, "agent restarted before the capture began")
            elif job.state == "capturing" and not parts.pipeline.recover_interrupted(job):
                self._resume_failed(parts.reporter, job, "agent restarted before any video was captured")
            if job.state == "captured":
                parts.retry.resume(job)

    def _resume_failed(self, reporter: Reporter, job: Job, reason: str) -> None:
        job.state = "failed"
        self.spool.save(job)
        reporter.failed(job.request_id, job.request.camera_id, reason)

    # helpers

    def _object_lock(self) -> ObjectLock | None:
        days = self._s3.object_lock_days
        return ObjectLock(self._s3.object_lock_mode, days) if days else None

    def _default_signer(self) -> Signer:
        from agent.clips.manifest import sign_manifest
        from common.signing import load_or_create_key

        key = load_or_create_key(self.settings.key_file)
        return lambda manifest: sign_manifest(manifest, key)


def _default_recover() -> Recover:
    from agent.clips.writer import recover_partial

    return recover_partial


class _Parts(NamedTuple):
    """What `start()` builds: they need the outbox, which is opened there."""

    reporter: Reporter
    pipeline: Pipeline
    admission: Admission
    captures: CaptureQueue
    retry: UploadRetry
