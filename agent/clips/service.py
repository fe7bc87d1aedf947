"""The agent's clip service: takes clip and arm commands, runs captures in priority order, delivers clips.

Lifecycle: `start()` opens the outbox, resumes what the spool holds (partial captures from a crash are cut to
their last complete fragment and delivered), then starts the workers. `handle()` is called on the event loop
for every valid command (agent/commands.py drops malformed ones unanswered). `stop(grace_s)` stops taking
work, lets running captures finish within the grace period, cancels the rest (their partial clips stay in the
spool and are delivered on the next start), and flushes the outbox briefly; what is not acknowledged stays on
disk.

Ordering: at most `max_concurrent_captures` captures run (that many workers); waiting requests are served by
priority (112, 119, disaster, vulnerable, routine; FIFO within one). A window starting more than
CAPTURE_LEAD_S from now waits on a timer, not in a worker; one more than `max_future_s` ahead is refused.
Uploads share one scheduler that orders parts by the same priority under the district's bandwidth cap. Clips
S3 did not take are retried with capped, fully jittered backoff, best priority first, and all at once as soon
as one upload succeeds again. While S3 refuses for a reason a person must fix (blocked.py), one clip is tried
every `blocked_retry_s`.

Housekeeping: every PRUNE_EVERY_S the retry loop deletes failed clips older than `failed_retention_s` from the
spool (the directory scan runs in a worker thread) and forgets request ids older than `seen_ids_retention_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from agent.clips.metrics import ClipMetrics
from agent.clips.outbox import Outbox, Publish
from agent.clips.pipeline import CameraTarget, CapturePool, Pipeline, Recover, Reporter, Signer
from agent.clips.s3 import make_client
from agent.clips.settings import ClipSettings, S3Settings
from agent.clips.spool import Job, Spool
from agent.clips.upload import ObjectLock, Uploader, UploadScheduler
from contract.messages import PRIORITY_RANK, ArmRequest, ClipRequest

log = logging.getLogger(__name__)

# A start this close to now needs no buffer: the live stream's next keyframe is that close.
LIVE_TOLERANCE = timedelta(seconds=2)
# A window starting later is handed to a capture worker this long before its start: the worker opens the
# RTSP session (~0.1 s) and gets a keyframe (up to a GOP) at or before the start meanwhile.
CAPTURE_LEAD_S = 5.0
# Housekeeping of the spool and the seen request ids; retention is days, so minutes of slack do not matter.
PRUNE_EVERY_S = 300.0

__all__ = ["CameraTarget", "ClipService"]


class ClipService:
    def __init__(
        self,
        settings: ClipSettings,
        s3: S3Settings,
        *,
        district: str,
        agent_id: str,
        pool: CapturePool,
        publish: Publish,
        camera_lookup: Callable[[str], CameraTarget | None],
        metrics_registry: CollectorRegistry | None = None,
        s3_client: Any = None,
        recover: Recover | None = None,
        signer: Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self._s3, self._district, self._agent_id = settings, s3, district, agent_id
        self._pool, self._publish, self._lookup = pool, publish, camera_lookup
        self.metrics = ClipMetrics(metrics_registry)
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes, settings.failed_retention_s)
        self._clock = clock  # wall clock (epoch seconds) of retention; injectable for tests
        self._pruned_at: float | None = None
        scheduler = UploadScheduler(settings.max_concurrent_parts, settings.upload_bandwidth_bps)
        self._uploader = Uploader(
            s3_client or make_client(s3), scheduler, settings.part_size_bytes,
            on_bytes=self.metrics.uploaded_bytes.inc,
        )  # fmt: skip
        self._recover, self._signer = recover, signer
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._jobs: dict[str, Job] = {}
        self._retry_at: dict[str, float] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}  # jobs whose window starts later
        self._stop = asyncio.Event()
        self._retry_wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: Outbox | None = None
        self._pipeline: Pipeline | None = None
        self._reporter: Reporter | None = None

    # lifecycle

    async def start(self) -> None:
        self._outbox = Outbox(
            self.settings.spool_dir / "outbox.sqlite3", self._publish,
            republish_after_s=self.settings.republish_after_s,
            seen_retention_s=self.settings.seen_ids_retention_s, clock=self._clock,
        )  # fmt: skip
        self._reporter = Reporter(self._district, self._agent_id, self._outbox, self.metrics)
        signer = self._signer if self._signer is not None else await asyncio.to_thread(self._default_signer)
        self._pipeline = Pipeline(
            spool=self.spool, uploader=self._uploader, reporter=self._reporter, pool=self._pool,
            lookup=self._lookup, signer=signer,
            recover=self._recover or _default_recover(), bucket=self._s3.bucket, lock=self._object_lock(),
            district=self._district, agent_id=self._agent_id, metrics=self.metrics,
        )  # fmt: skip
        self._resume_spool()
        self._tasks = [asyncio.create_task(self._outbox.run(self._stop), name="clip-outbox")]
        self._tasks += [
            asyncio.create_task(self._capture_worker(), name=f"clip-capture-{n}")
            for n in range(self.settings.max_concurrent_captures)
        ]
        self._tasks.append(asyncio.create_task(self._retry_loop(), name="clip-upload-retry"))
        self._refresh_gauges()

    async def stop(self, grace_s: float = 30.0) -> None:
        self._stop.set()
        for timer in self._timers.values():
            timer.cancel()  # still queued in the spool: resumed on the next start
        self._timers.clear()
        if not await self._captures_done(grace_s):
            for cancel in self._cancels.values():
                cancel.set()  # the capture ends at its next packet; its clip stays in the spool
            await self._captures_done(10.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._outbox is not None:
            await self._outbox.drain(min(2.0, max(0.1, grace_s)))
            self._outbox.close()

    async def _captures_done(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # commands

    def handle(self, command: ClipRequest | ArmRequest) -> None:
        """One valid command (agent/commands.py admits them), on the event loop. Never raises."""
        try:
            if isinstance(command, ClipRequest):
                self._on_clip(command)
            else:
                self._on_arm(command)
        except Exception:  # a bug in one command must not stop the command loop
            log.exception("command %s failed", command.request_id)

    def _on_clip(self, request: ClipRequest) -> None:
        """The request id is recorded only once the request is answered (refused, or spooled): a request
        that hit an unexpected error gets a failed result, and a redelivery of it is tried afresh."""
        assert self._outbox is not None and self._reporter is not None
        if self._outbox.seen(request.request_id):
            self.metrics.requests.labels("duplicate").inc()
            log.info("clip request %s delivered again; already taken", request.request_id)
            return
        try:
            job = self._take(request)
        except Exception:
            self.metrics.internal_errors.labels("command").inc()
            log.exception("clip request %s failed unexpectedly", request.request_id)
            self.spool.release(request.request_id)
            self._reporter.failed(request.request_id, request.camera_id, "internal error")
            return
        self._outbox.first_sight(request.request_id)
        if job is not None:
            self.metrics.requests.labels("accepted").inc()
            self._reporter.send(request.request_id, request.camera_id, "accepted")
            self._enqueue(job)

    def _take(self, request: ClipRequest) -> Job | None:
        """Spool the request's job, or send its refusal (None)."""
        assert self._reporter is not None
        refusal = self._refusal(request)
        if refusal is not None:
            self.metrics.requests.labels(refusal.replace(" ", "_")).inc()
            self._reporter.failed(request.request_id, request.camera_id, refusal)
            return None
        job = Job(request=request)
        self.spool.save(job)
        return job

    def _refusal(self, request: ClipRequest) -> str | None:
        target = self._lookup(request.camera_id)
        if target is None:
            return "unknown camera"
        window_s = (request.end - request.start).total_seconds()
        if window_s > self.settings.max_window_s:
            return "window longer than max_window_s"
        if not target.online:
            return "camera offline"
        if request.start > datetime.now(UTC) + timedelta(seconds=self.settings.max_future_s):
            return "start too far in the future"
        if request.start < datetime.now(UTC) - LIVE_TOLERANCE:
            earliest = self._pool.earliest_buffered(request.camera_id)
            if earliest is None or request.start < earliest - LIVE_TOLERANCE:
                return "start further in the past than any buffer holds"
        estimate = int(window_s * self.settings.estimated_bitrate_bps / 8)
        admitted = self.spool.admit(request.request_id, estimate, routine=request.priority == "routine")
        self.metrics.spool_full.set(1 if self.spool.full else 0)
        return None if admitted else "spool full"

    def _on_arm(self, request: ArmRequest) -> None:
        target = self._lookup(request.camera_id)
        if target is None or not target.online:
            log.info("arm of camera %s ignored: unknown or offline", request.camera_id)
            return
        self._pool.arm(target.camera_id, target.rtsp_url, request.duration_s, target.clock_offset_s)

    # workers

    def _enqueue(self, job: Job) -> None:
        """Queue a job for a capture worker; one whose window starts later waits on a timer, not a worker."""
        self._jobs[job.request_id] = job
        wait_s = (job.request.start - datetime.now(UTC)).total_seconds() - CAPTURE_LEAD_S
        if wait_s > 0:
            self._timers[job.request_id] = asyncio.get_running_loop().call_later(wait_s, self._due, job)
            return
        self._due(job)

    def _due(self, job: Job) -> None:
        self._timers.pop(job.request_id, None)
        self._queue.put_nowait((PRIORITY_RANK[job.request.priority], next(self._order), job.request_id))

    async def _capture_worker(self) -> None:
        assert self._pipeline is not None
        while not self._stop.is_set():
            _, _, request_id = await self._queue.get()
            job = self._jobs.get(request_id)
            if job is None or self._stop.is_set():
                continue
            cancel = self._cancels[request_id] = threading.Event()
            self._idle.clear()
            try:
                finished = await self._pipeline.run(job, cancel)
            except Exception:
                self.metrics.internal_errors.labels("capture").inc()
                log.exception("clip %s: delivery failed unexpectedly; left in the spool", request_id)
                finished = False
            finally:
                del self._cancels[request_id]
                if not self._cancels:
                    self._idle.set()
            self._after_attempt(job, finished)

    async def _retry_loop(self) -> None:
        """Uploads clips waiting in the spool. One round failing unexpectedly must not end the loop: no
        spooled clip would be uploaded again until a restart."""
        while not self._stop.is_set():
            try:
                await self._retry_round()
            except Exception:
                self.metrics.internal_errors.labels("upload_retry").inc()
                log.exception("a round of upload retries failed; the next one goes on")
                await asyncio.sleep(1.0)  # not a hot loop if the error repeats

    async def _retry_round(self) -> None:
        assert self._pipeline is not None
        self._refresh_gauges()
        await self._prune_if_due()
        job = self._next_due()
        if job is None:
            self._retry_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_wake.wait(), self._next_wait())
            return
        try:
            finished = await self._pipeline.deliver(job)
        except Exception:  # e.g. the spool's disk failed while recording the failure: retry the clip later
            self.metrics.internal_errors.labels("upload_retry").inc()
            log.exception("clip %s: delivery failed unexpectedly; retried later", job.request_id)
            finished = False
        self._after_attempt(job, finished)

    async def _prune_if_due(self) -> None:
        now = self._clock()
        if self._pruned_at is not None and 0 <= now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            await self.prune(now)
        except Exception:  # housekeeping must never stop the uploads; tried again next round
            log.exception("pruning the spool and outbox failed")

    async def prune(self, now: float) -> None:
        """Delete failed clips and forget request ids past their retention (`now`: epoch seconds)."""
        assert self._outbox is not None
        busy = frozenset(self._jobs)  # jobs the service is working on are never pruned
        await asyncio.to_thread(self.spool.prune_failed, now, busy)
        self._outbox.prune_seen(now)

    def _after_attempt(self, job: Job, finished: bool) -> None:
        if finished:
            self._retry_at.pop(job.request_id, None)
            self._jobs.pop(job.request_id, None)
            if job.state == "uploaded":  # the uplink works again: retry the others now
                for request_id in self._retry_at:
                    self._retry_at[request_id] = 0.0
        elif self._pipeline is not None and self._pipeline.block.reason is not None:
            # S3 refuses for a reason a person must fix: one probe per blocked_retry_s, not one per clip.
            probe_at = time.monotonic() + self.settings.blocked_retry_s
            self._retry_at[job.request_id] = probe_at
            for request_id, at in self._retry_at.items():
                self._retry_at[request_id] = max(at, probe_at)
        else:
            growth = self.settings.retry_base_s * 2 ** min(job.upload_attempts, 20)
            cap = min(self.settings.retry_max_s, growth)
            self._retry_at[job.request_id] = time.monotonic() + random.uniform(0, cap)
        self._retry_wake.set()
        self._refresh_gauges()

    def _next_due(self) -> Job | None:
        now = time.monotonic()
        due = [self._jobs[r] for r, at in self._retry_at.items() if at <= now and r in self._jobs]
        if not due:
            return None
        job = min(due, key=lambda j: (PRIORITY_RANK[j.request.priority], j.received_at))
        del self._retry_at[job.request_id]
        return job

    def _next_wait(self) -> float:
        if not self._retry_at:
            return 1.0
        return min(1.0, max(0.01, min(self._retry_at.values()) - time.monotonic()))

    # restart

    def _resume_spool(self) -> None:
        """Before the workers start: pick up what a previous run left (see spool.py). Reads partial clips;
        blocks the loop briefly, once."""
        assert self._pipeline is not None and self._reporter is not None
        now = datetime.now(UTC)
        for job in self.spool.jobs():
            if job.state == "queued" and job.request.end > now:
                self._enqueue(job)
            elif job.state == "queued":
                self._resume_failed(job, "agent restarted before the capture began")
            elif job.state == "capturing" and not self._pipeline.recover_interrupted(job):
                self._resume_failed(job, "agent restarted before any video was captured")
            if job.state == "captured":
                log.info("resuming upload of spooled clip %s", job.request_id)
                self._jobs[job.request_id] = job
                self._retry_at[job.request_id] = 0.0

    def _resume_failed(self, job: Job, reason: str) -> None:
        assert self._reporter is not None
        job.state = "failed"
        self.spool.save(job)
        self._reporter.failed(job.request_id, job.request.camera_id, reason)

    # helpers

    def _refresh_gauges(self) -> None:
        backlog = [j for j in self._jobs.values() if j.state in ("capturing", "captured")]
        self.metrics.backlog_clips.set(len(backlog))
        self.metrics.backlog_bytes.set(sum(_size(self.spool.clip_path(j.request_id)) for j in backlog))
        self.metrics.spool_usage.set(self.spool.usage_bytes())
        self.metrics.spool_full.set(1 if self.spool.full else 0)
        if self._outbox is not None:
            self.metrics.outbox_pending.set(self._outbox.pending())

    def _object_lock(self) -> ObjectLock | None:
        days = self._s3.object_lock_days
        return ObjectLock(self._s3.object_lock_mode, days) if days else None

    def _default_signer(self) -> Signer:
        from agent.clips.manifest import load_or_create_key, sign_manifest

        key = load_or_create_key(self.settings.key_file)
        return lambda manifest: sign_manifest(manifest, key)


def _default_recover() -> Recover:
    from agent.clips.writer import recover_partial

    return recover_partial


def _size(path: Any) -> int:
    try:
        return int(path.stat().st_size)
    except FileNotFoundError:
        return 0
