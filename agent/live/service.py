"""Live views of the district's cameras: what the agent does with a signed `cmd/live` LiveRequest.

Every action passes the district's command policy first (agent/command_policy.py, as clips do: signature,
expiry, district, agency, service, and for start and renew an `until` within `commands.max_live_s`). A refusal
is published as a LiveUpdate "refused" with its reason, and nothing is captured. Further refusals here:
`unknown_camera`, `camera_offline`, `too_many_sessions` (`live.max_sessions`).

`start` begins a session (feed.py reads the camera's shared RTSP session and cuts segments, delivery.py
uploads and announces them) and answers "started"; a `renew` (or a start delivered again) moves its `until`; a
renew of a session the agent does not run (it restarted) starts it; `stop` ends it. A session also ends on its
own at `until` (`expired`), when its camera is lost (`camera_lost`) or sends no keyframe (`no_keyframe`), and
on shutdown (`shutdown`). Its last message, after its last segment, is "stopped" (stopped_by_request, expired,
shutdown) or "failed" (any other reason).

Updates are published at QoS 1 straight to the broker (not through the clip outbox): a live update that waits
out an outage is stale anyway, and the collector learns a session's end from `until` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from agent.clips.pipeline import CameraTarget
from agent.clips.session import MAIN, SessionPool
from agent.clips.upload import Uploader, upload_rank
from agent.command_policy import CommandPolicy, refusal
from agent.live.delivery import END_DRAIN_S, Delivery, LiveKeys
from agent.live.feed import Feed, FeedTarget
from agent.live.metrics import LiveMetrics
from agent.live.settings import LiveSettings
from contract.messages import LiveRequest, LiveSegmentInfo, LiveStatusName, LiveStream, LiveUpdate

log = logging.getLogger(__name__)

STOPPED_REASONS = frozenset({"stopped_by_request", "expired", "shutdown"})
Lookup = Callable[[str, LiveStream], CameraTarget | None]


@dataclass
class _Run:
    request: LiveRequest
    feed: Feed
    delivery: Delivery
    timer: asyncio.TimerHandle | None = None


class LiveService:
    def __init__(
        self,
        settings: LiveSettings,
        *,
        district: str,
        agent_id: str,
        policy: CommandPolicy,
        pool: SessionPool,
        lookup: Lookup,
        uploader: Uploader,
        bucket: str,
        publish: Callable[[LiveUpdate], object],
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """`lookup(camera, stream)`: that stream with credentials, or None; `publish` is thread-safe."""
        self._settings, self._district, self._agent_id = settings, district, agent_id
        self._policy, self._pool, self._lookup = policy, pool, lookup
        self._uploader, self._bucket, self._publish = uploader, bucket, publish
        self.metrics = LiveMetrics(metrics_registry)
        self._runs: dict[str, _Run] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """End every session (`shutdown`) and wait for their last segments and answers."""
        runs = list(self._runs.values())
        for run in runs:
            self._end(run, "shutdown")
        for run in runs:
            await asyncio.to_thread(run.delivery.thread.join, END_DRAIN_S + 5)

    def handle(self, request: LiveRequest) -> None:
        """One valid LiveRequest (agent/commands.py admits them), on the event loop. Never raises."""
        try:
            self._handle(request)
        except Exception:  # a bug in one command must not stop the command loop
            log.exception("live command for session %s failed", request.session_id)

    def refuse(self, request: LiveRequest, reason: str) -> None:
        self.metrics.requests.labels(reason).inc()
        log.warning("live %s of camera %s (%s) refused: %s", request.action, request.camera_id,
                    request.agency, reason)  # fmt: skip
        self._send(request, "refused", reason)

    def _handle(self, request: LiveRequest) -> None:
        refused = refusal(request, self._policy, datetime.now(UTC))
        if refused is not None:
            self.refuse(request, refused)
            return
        run = self._runs.get(request.session_id)
        if request.action == "stop":
            self.metrics.requests.labels("stopped").inc()
            if run is not None:
                self._end(run, "stopped_by_request")
            else:  # already over (or never ran here): say so again
                self._send(request, "stopped", "stopped_by_request")
            return
        if run is not None:
            self.metrics.requests.labels("renewed").inc()
            self._expire_at(run, request.until)
            if request.action == "start":  # delivered again: answer again
                self._send(run.request, "started")
            return
        self._start(request)

    def _start(self, request: LiveRequest) -> None:
        target, main = self._lookup(request.camera_id, request.stream), self._lookup(request.camera_id, MAIN)
        problem = self._cannot_start(target, main)
        if problem is not None:
            self.refuse(request, problem)
            return
        assert target is not None and main is not None
        # One camera stream with one URL is one RTSP session, whatever it is called.
        stream = MAIN if target.rtsp_url == main.rtsp_url else request.stream
        pool = self._pool

        def arm(duration_s: float) -> None:
            if self._settings.arm_preroll:
                pool.arm(main.camera_id, main.rtsp_url, duration_s, main.clock_offset_s)

        feed_target = FeedTarget(request.camera_id, stream, target.rtsp_url, target.clock_offset_s, arm)
        rank = upload_rank(request.priority, live=True)
        holder: list[_Run] = []
        delivery = Delivery(
            LiveKeys(self._district, request.session_id),
            put=lambda key, body, content_type: self._put(request, rank, key, body, content_type),
            announce=lambda segment: self._send(request, "segment", segment=segment),
            on_end=lambda reason: self._ended(holder[0], reason),
            queue_max_bytes=self._settings.queue_max_bytes,
            metrics=self.metrics,
        )
        run = _Run(request, Feed(request.session_id, pool, feed_target, self._settings, delivery), delivery)
        holder.append(run)
        self._runs[request.session_id] = run
        self.metrics.sessions.set(len(self._runs))
        self.metrics.requests.labels("started").inc()
        self._expire_at(run, request.until)
        log.info("live %s of camera %s (%s stream) started for %s", request.session_id, request.camera_id,
                 request.stream, request.agency)  # fmt: skip
        self._send(request, "started")
        delivery.thread.start()
        run.feed.thread.start()

    def _cannot_start(self, target: CameraTarget | None, main: CameraTarget | None) -> str | None:
        if target is None or main is None:
            return "unknown_camera"
        if not target.online or not target.rtsp_url:
            return "camera_offline"
        if len(self._runs) >= self._settings.max_sessions:
            return "too_many_sessions"
        return None

    def _expire_at(self, run: _Run, until: datetime) -> None:
        assert self._loop is not None, "handle() before start()"
        if run.timer is not None:
            run.timer.cancel()
        delay_s = max(0.0, (until - datetime.now(UTC)).total_seconds())
        run.timer = self._loop.call_later(delay_s, self._end, run, "expired")

    def _end(self, run: _Run, reason: str) -> None:
        if run.timer is not None:
            run.timer.cancel()
        run.feed.stop(reason)

    def _ended(self, run: _Run, reason: str) -> None:
        """The session's last segment is out (delivery thread): its last answer, then it is forgotten."""
        request = run.request
        self.metrics.ended.labels(reason).inc()
        log.info("live %s of camera %s ended: %s", request.session_id, request.camera_id, reason)
        self._send(request, "stopped" if reason in STOPPED_REASONS else "failed", reason)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._forget, run)

    def _forget(self, run: _Run) -> None:
        if run.timer is not None:
            run.timer.cancel()
        if self._runs.get(run.request.session_id) is run:
            del self._runs[run.request.session_id]
        self.metrics.sessions.set(len(self._runs))

    def _put(self, request: LiveRequest, rank: int, key: str, body: bytes, content_type: str) -> None:
        metadata = {"session-id": request.session_id, "camera-id": request.camera_id,
                    "district": self._district, "priority": request.priority}  # fmt: skip
        self._uploader.put_object(
            self._bucket, key, body, rank=rank, content_type=content_type, metadata=metadata, lane="live"
        )

    def _send(
        self, request: LiveRequest, status: LiveStatusName, reason: str | None = None,
        segment: LiveSegmentInfo | None = None,
    ) -> None:  # fmt: skip
        fields: dict[str, Any] = {"reason": reason} if reason else {}
        update = LiveUpdate(
            district=self._district, session_id=request.session_id, camera_id=request.camera_id,
            agent_id=self._agent_id, status=status, segment=segment, sent_at=datetime.now(UTC), **fields,
        )  # fmt: skip
        self._publish(update)
