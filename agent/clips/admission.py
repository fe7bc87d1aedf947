"""Admission of a clip request: a duplicate is dropped, a request the agent cannot serve is refused with its
reason, and one it can serve is spooled (space reserved) and answered `accepted` before it is queued.

The request id is recorded only once the request is answered (refused, or spooled): a request that hit an
unexpected error gets a failed result, and a redelivery of it is tried afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from agent.clips.metrics import ClipMetrics
from agent.clips.outbox import Outbox
from agent.clips.pipeline import CameraTarget, CapturePool, Reporter
from agent.clips.settings import ClipSettings
from agent.clips.spool import Job, Spool
from contract.messages import ClipRequest

log = logging.getLogger(__name__)

# A start this close to now needs no buffer: the live stream's next keyframe is that close.
LIVE_TOLERANCE = timedelta(seconds=2)


class Admission:
    def __init__(
        self,
        settings: ClipSettings,
        *,
        spool: Spool,
        pool: CapturePool,
        lookup: Callable[[str], CameraTarget | None],
        outbox: Outbox,
        reporter: Reporter,
        metrics: ClipMetrics,
        enqueue: Callable[[Job], None],
    ) -> None:
        """`enqueue` takes each accepted job (the capture queue)."""
        self._settings, self._spool, self._pool, self._lookup = settings, spool, pool, lookup
        self._outbox, self._reporter, self._metrics, self._enqueue = outbox, reporter, metrics, enqueue

    def admit(self, request: ClipRequest) -> None:
        if self._outbox.seen(request.request_id):
            self._metrics.requests.labels("duplicate").inc()
            log.info("clip request %s delivered again; already taken", request.request_id)
            return
        try:
            job = self._take(request)
        except Exception:
            self._metrics.internal_errors.labels("command").inc()
            log.exception("clip request %s failed unexpectedly", request.request_id)
            self._spool.release(request.request_id)
            self._reporter.failed(request.request_id, request.camera_id, "internal error")
            return
        self._outbox.first_sight(request.request_id)
        if job is not None:
            self._metrics.requests.labels("accepted").inc()
            self._reporter.send(request.request_id, request.camera_id, "accepted")
            self._enqueue(job)

    def _take(self, request: ClipRequest) -> Job | None:
        """Spool the request's job, or send its refusal (None)."""
        refusal = self._refusal(request)
        if refusal is not None:
            self._metrics.requests.labels(refusal.replace(" ", "_")).inc()
            self._reporter.failed(request.request_id, request.camera_id, refusal)
            return None
        job = Job(request=request)
        self._spool.save(job)
        if _needs_buffer(request):  # kept until the capture takes it, however long the queue makes it wait
            self._pool.hold(request.camera_id, request.request_id, request.start)
        return job

    def _refusal(self, request: ClipRequest) -> str | None:
        target = self._lookup(request.camera_id)
        if target is None:
            return "unknown camera"
        window_s = (request.end - request.start).total_seconds()
        if window_s > self._settings.max_window_s:
            return "window longer than max_window_s"
        if not target.online:
            return "camera offline"
        if request.start > datetime.now(UTC) + timedelta(seconds=self._settings.max_future_s):
            return "start too far in the future"
        if _needs_buffer(request):
            earliest = self._pool.earliest_buffered(request.camera_id)
            if earliest is None or request.start < earliest - LIVE_TOLERANCE:
                return "start further in the past than any buffer holds"
        estimate = int(window_s * self._settings.estimated_bitrate_bps / 8)
        admitted = self._spool.admit(request.request_id, estimate, routine=request.priority == "routine")
        self._metrics.spool_full.set(1 if self._spool.full else 0)
        return None if admitted else "spool full"


def _needs_buffer(request: ClipRequest) -> bool:
    return request.start < datetime.now(UTC) - LIVE_TOLERANCE
