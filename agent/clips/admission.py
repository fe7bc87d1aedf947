"""Admission of a clip request: a duplicate is dropped, a request the district does not serve
(agent/command_policy.py: signature, expiry, agency, service, window) or the agent cannot serve (camera,
buffer, spool) is refused with its reason, and one it can serve is spooled (space reserved) and answered
`accepted`, with its source (live or pre-roll), before it is queued.

The request id is recorded only once the request is answered (refused, or spooled): a request that hit an
unexpected error gets a failed result, and a redelivery of it is tried afresh. The ids are kept on disk (the
outbox database) for `clips.seen_ids_retention_s`, longer than any command may be valid
(`commands.max_expiry_s`), so a replayed signed command makes no second clip, across restarts too. A command
without a valid signature is answered but its id is not recorded: a forgery cannot take a real request's id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from agent.clips.metrics import ClipMetrics
from agent.clips.outbox import Outbox
from agent.clips.pipeline import CameraTarget, CapturePool, Reporter
from agent.clips.settings import ClipSettings
from agent.clips.sources import RecordedSource, choose
from agent.clips.spool import Job, Spool
from agent.command_policy import UNAUTHENTICATED, CommandPolicy, refusal
from contract.messages import ClipRequest

log = logging.getLogger(__name__)

NO_RECORDED_SOURCE = "no recorded storage (camera or recorder) is configured for this camera"


class Admission:
    def __init__(
        self,
        settings: ClipSettings,
        *,
        policy: CommandPolicy,
        spool: Spool,
        pool: CapturePool,
        lookup: Callable[[str], CameraTarget | None],
        outbox: Outbox,
        reporter: Reporter,
        metrics: ClipMetrics,
        enqueue: Callable[[Job], None],
        recorded: RecordedSource | None = None,
    ) -> None:
        """`enqueue` takes each accepted job (the capture queue); `recorded`: recorded storage, if any."""
        self._settings, self._policy, self._recorded = settings, policy, recorded
        self._spool, self._pool, self._lookup = spool, pool, lookup
        self._outbox, self._reporter, self._metrics, self._enqueue = outbox, reporter, metrics, enqueue

    def admit(self, request: ClipRequest) -> None:
        if self._outbox.seen(request.request_id):
            self._metrics.requests.labels("duplicate").inc()
            log.info("clip request %s delivered again; already taken", request.request_id)
            return
        refused = refusal(request, self._policy, datetime.now(UTC))
        if refused is not None:
            self._refuse_command(request, refused)
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
            self._reporter.send(request.request_id, request.camera_id, "accepted", source=job.source)
            self._enqueue(job)

    def _refuse_command(self, request: ClipRequest, reason: str) -> None:
        self._metrics.commands_refused.labels(reason).inc()
        self._metrics.requests.labels(reason).inc()
        log.warning("clip request %s of %s refused: %s", request.request_id, request.agency, reason)
        self._reporter.failed(request.request_id, request.camera_id, reason)
        if reason not in UNAUTHENTICATED:
            self._outbox.first_sight(request.request_id)

    def _take(self, request: ClipRequest) -> Job | None:
        """Spool the request's job, or send its refusal (None)."""
        job, label, reason = self._job(request)
        if job is None:
            self._metrics.requests.labels(label).inc()
            self._reporter.failed(request.request_id, request.camera_id, reason)
            return None
        self._spool.save(job)
        if job.source == "preroll":  # kept until the capture takes it, however long the queue makes it wait
            self._pool.hold(request.camera_id, request.request_id, request.start)
        return job

    def _job(self, request: ClipRequest) -> tuple[Job | None, str, str]:
        """The job to spool, or (None, metric label, reason). The source is decided once, here: the buffer
        hold and the updates follow it."""
        target = self._lookup(request.camera_id)
        if target is None:
            return None, "unknown_camera", "unknown camera"
        recorded = self._recorded.why_not(request.camera_id) if self._recorded else NO_RECORDED_SOURCE
        earliest = self._pool.earliest_buffered(request.camera_id)
        source, reason = choose(request.start, datetime.now(UTC), earliest, recorded)
        if source is None or reason is not None:
            return None, "no_source", reason or "no source"
        if source != "recording" and not target.online:  # a recorder may hold an offline camera's footage
            return None, "camera_offline", "camera offline"
        window_s = (request.end - request.start).total_seconds()
        estimate = int(window_s * self._settings.estimated_bitrate_bps / 8)
        admitted = self._spool.admit(request.request_id, estimate, routine=request.priority == "routine")
        self._metrics.spool_full.set(1 if self._spool.full else 0)
        if not admitted:
            return None, "spool_full", "spool full"
        return Job(request=request, source=source), "", ""
