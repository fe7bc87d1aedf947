"""The upload retry loop: uploads clips waiting in the spool, and keeps the spool tidy.

Clips S3 did not take are retried with capped, fully jittered backoff (agent/backoff.py), best priority first,
and all at once as soon as one upload succeeds again. While S3 refuses for a reason a person must fix
(blocked.py), one clip is tried every `blocked_retry_s`.

Housekeeping: every PRUNE_EVERY_S the loop deletes failed clips older than `failed_retention_s` from the
spool (the directory scan runs in a worker thread) and forgets request ids older than `seen_ids_retention_s`.
Each round refreshes the backlog gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from agent.backoff import Backoff
from agent.clips.metrics import ClipMetrics
from agent.clips.outbox import Outbox
from agent.clips.pipeline import Pipeline
from agent.clips.settings import ClipSettings
from agent.clips.spool import Job, Spool
from contract.messages import PRIORITY_RANK

log = logging.getLogger(__name__)

# Housekeeping of the spool and the seen request ids; retention is days, so minutes of slack do not matter.
PRUNE_EVERY_S = 300.0


class UploadRetry:
    def __init__(
        self,
        settings: ClipSettings,
        jobs: dict[str, Job],
        *,
        spool: Spool,
        outbox: Outbox,
        pipeline: Pipeline,
        metrics: ClipMetrics,
        clock: Callable[[], float],
    ) -> None:
        """`jobs` is the service's working set (shared); `clock` is the wall clock of retention (epoch s)."""
        self._settings, self._jobs, self._spool, self._outbox = settings, jobs, spool, outbox
        self._pipeline, self._metrics, self._clock = pipeline, metrics, clock
        self._retry_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._pruned_at: float | None = None

    def resume(self, job: Job) -> None:
        """A captured clip from a previous run: uploaded as soon as the loop runs."""
        log.info("resuming upload of spooled clip %s", job.request_id)
        self._jobs[job.request_id] = job
        self._retry_at[job.request_id] = 0.0

    def after_attempt(self, job: Job, finished: bool) -> None:
        """After a capture or an upload of `job`: forget it when finished, else schedule its retry."""
        if finished:
            self._retry_at.pop(job.request_id, None)
            self._jobs.pop(job.request_id, None)
            if job.state == "uploaded":  # the uplink works again: retry the others now
                for request_id in self._retry_at:
                    self._retry_at[request_id] = 0.0
        elif self._pipeline.block.reason is not None:
            # S3 refuses for a reason a person must fix: one probe per blocked_retry_s, not one per clip.
            probe_at = time.monotonic() + self._settings.blocked_retry_s
            self._retry_at[job.request_id] = probe_at
            for request_id, at in self._retry_at.items():
                self._retry_at[request_id] = max(at, probe_at)
        else:
            backoff = Backoff(self._settings.retry_base_s, self._settings.retry_max_s)
            backoff.failures = job.upload_attempts
            self._retry_at[job.request_id] = time.monotonic() + backoff.next_delay()
        self._wake.set()
        self.refresh_gauges()

    async def run(self, stop: asyncio.Event) -> None:
        """One round failing unexpectedly must not end the loop: no spooled clip would be uploaded again
        until a restart."""
        while not stop.is_set():
            try:
                await self._round()
            except Exception:
                self._metrics.internal_errors.labels("upload_retry").inc()
                log.exception("a round of upload retries failed; the next one goes on")
                await asyncio.sleep(1.0)  # not a hot loop if the error repeats

    async def prune(self, now: float) -> None:
        """Delete failed clips and forget request ids past their retention (`now`: epoch seconds)."""
        busy = frozenset(self._jobs)  # jobs the service is working on are never pruned
        await asyncio.to_thread(self._spool.prune_failed, now, busy)
        self._outbox.prune_seen(now)

    def refresh_gauges(self) -> None:
        backlog = [j for j in self._jobs.values() if j.state in ("capturing", "captured")]
        self._metrics.backlog_clips.set(len(backlog))
        self._metrics.backlog_bytes.set(sum(_size(self._spool.clip_path(j.request_id)) for j in backlog))
        self._metrics.spool_usage.set(self._spool.usage_bytes())
        self._metrics.spool_full.set(1 if self._spool.full else 0)
        self._metrics.outbox_pending.set(self._outbox.pending())

    async def _round(self) -> None:
        self.refresh_gauges()
        await self._prune_if_due()
        job = self._next_due()
        if job is None:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_wait())
            return
        try:
            finished = await self._pipeline.deliver(job)
        except Exception:  # e.g. the spool's disk failed while recording the failure: retry the clip later
            self._metrics.internal_errors.labels("upload_retry").inc()
            log.exception("clip %s: delivery failed unexpectedly; retried later", job.request_id)
            finished = False
        self.after_attempt(job, finished)

    async def _prune_if_due(self) -> None:
        now = self._clock()
        if self._pruned_at is not None and 0 <= now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            await self.prune(now)
        except Exception:  # housekeeping must never stop the uploads; tried again next round
            log.exception("pruning the spool and outbox failed")

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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
