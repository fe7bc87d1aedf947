"""The capture queue: at most `max_concurrent_captures` captures run (that many workers), waiting requests are
served by priority (112, 119, disaster, vulnerable, routine; FIFO within one).

A window starting more than CAPTURE_LEAD_S from now waits on a timer, not in a worker. On stop, timers are
dropped (their jobs stay queued in the spool and are resumed on the next start), running captures get the
grace period to finish and are then cut at their next packet (their partial clips stay in the spool).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from agent.clips.metrics import ClipMetrics
from agent.clips.pipeline import Pipeline
from agent.clips.spool import Job
from contract.messages import PRIORITY_RANK

log = logging.getLogger(__name__)

# A window starting later is handed to a capture worker this long before its start: the worker opens the
# RTSP session (~0.1 s) and gets a keyframe (up to a GOP) at or before the start meanwhile.
CAPTURE_LEAD_S = 5.0
# After the grace period, cut captures end at their next packet; this bounds the wait for them.
CUT_WAIT_S = 10.0


class CaptureQueue:
    def __init__(
        self,
        jobs: dict[str, Job],
        metrics: ClipMetrics,
        *,
        after_attempt: Callable[[Job, bool], None],
    ) -> None:
        """`jobs`: the service's working set (shared); `after_attempt(job, finished)` follows each capture."""
        self._jobs, self._metrics, self._after_attempt = jobs, metrics, after_attempt
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._cancels: dict[str, threading.Event] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}  # jobs whose window starts later
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []

    def enqueue(self, job: Job) -> None:
        """Queue a job for a capture worker; one whose window starts later waits on a timer, not a worker."""
        self._jobs[job.request_id] = job
        wait_s = (job.request.start - datetime.now(UTC)).total_seconds() - CAPTURE_LEAD_S
        if wait_s > 0:
            self._timers[job.request_id] = asyncio.get_running_loop().call_later(wait_s, self._due, job)
            return
        self._due(job)

    def start(self, pipeline: Pipeline, workers: int) -> None:
        self._workers = [
            asyncio.create_task(self._work(pipeline), name=f"clip-capture-{n}") for n in range(workers)
        ]

    async def stop(self, grace_s: float) -> None:
        """No new captures; running ones get `grace_s` to finish, then are cut."""
        self._stopping = True
        for timer in self._timers.values():
            timer.cancel()  # still queued in the spool: resumed on the next start
        self._timers.clear()
        if not await self._captures_done(grace_s):
            for cancel in self._cancels.values():
                cancel.set()  # the capture ends at its next packet; its clip stays in the spool
            await self._captures_done(CUT_WAIT_S)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def _due(self, job: Job) -> None:
        self._timers.pop(job.request_id, None)
        self._queue.put_nowait((PRIORITY_RANK[job.request.priority], next(self._order), job.request_id))

    async def _captures_done(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _work(self, pipeline: Pipeline) -> None:
        while not self._stopping:
            _, _, request_id = await self._queue.get()
            job = self._jobs.get(request_id)
            if job is None or self._stopping:
                continue
            cancel = self._cancels[request_id] = threading.Event()
            self._idle.clear()
            try:
                finished = await pipeline.run(job, cancel)
            except Exception:
                self._metrics.internal_errors.labels("capture").inc()
                log.exception("clip %s: delivery failed unexpectedly; left in the spool", request_id)
                finished = False
            finally:
                del self._cancels[request_id]
                if not self._cancels:
                    self._idle.set()
            self._after_attempt(job, finished)
