"""The agent's composition root: builds the parts and runs them until told to stop.

The parts: the clip service (agent/clips/service.py), command admission (agent/commands.py), the MQTT link
(agent/mqtt_link.py), the publishing policy (agent/publishing.py) and the loops here that observe the cameras
(sweep and discovery, liveness, stream checks). Order (STYLE.md): the MQTT link starts first and stops last;
discovery starts last and stops first. On stop, new commands are refused, an in-flight clip gets
`clips.shutdown_grace_s` to finish, and the retained `offline` presence is published before the link
disconnects: nobody waits for the last will.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from typing import Any

import aiohttp

from agent.backoff import RetryBook
from agent.clips.pipeline import CameraTarget
from agent.clips.service import ClipService
from agent.clips.session import MAIN, SessionPool
from agent.clips.upload import UploadScheduler
from agent.command_policy import CommandPolicy
from agent.commands import CommandAdmission
from agent.config import AgentSettings
from agent.credentials import CredentialStore
from agent.firmware import FirmwareCatalog
from agent.inventory import assess_firmware, discover_and_reconcile, profiles_from_hints
from agent.ledger import load_ledger
from agent.live.service import LiveService
from agent.liveness_loop import check_all
from agent.metrics import AgentMetrics
from agent.mqtt_link import MqttLink
from agent.publishing import Publishing
from agent.reconcile import Reconciliation
from agent.registry import Registry
from agent.stream_check import StreamChecker, Timeouts
from agent.stream_health import rtsp_url_for, run_cycle
from agent.sweep import Progress, sweep
from contract import topics
from contract.codec import encode
from contract.messages import ArmRequest, ClipRequest, LiveRequest, LiveStream

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, settings: AgentSettings, metrics: AgentMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or AgentMetrics()
        cameras, self.ledger_problems = load_ledger(settings.ledger)
        self.credentials = CredentialStore.from_file(settings.secrets_file)
        self.command_policy = CommandPolicy.load(settings.commands, settings.district)
        self.registry = Registry(settings.district, settings.agent_id, cameras)
        onvif = settings.onvif
        self.retry_book = RetryBook(base_s=onvif.retry_base_s, cap_s=onvif.retry_max_s)
        self.firmware, firmware_problems = FirmwareCatalog.load()
        for problem in firmware_problems:
            log.warning("firmware profile skipped: %s", problem)
        profiles_from_hints(self.firmware, self.registry.records.values())
        health = settings.health
        self.streams = StreamChecker(
            concurrency=health.stream_concurrency,
            timeouts=Timeouts(health.stream_open_s, health.stream_read_s, health.stream_total_s),
        )
        self.publishing = Publishing(
            self.registry,
            self.metrics,
            publish=lambda delivery, kind: self.link.publish(delivery, kind),  # noqa: PLW0108 (link is built below)
            clock_skew_limit_s=health.clock_skew_limit_s,
        )
        clips = settings.clips
        self.clip_pool = SessionPool(
            open_timeout_s=clips.open_timeout_s,
            read_timeout_s=clips.read_timeout_s,
            preroll_max_s=clips.preroll_max_s,
            preroll_max_bytes=clips.preroll_max_bytes,
            max_sessions=clips.max_rtsp_sessions,
        )
        # One order and one bandwidth cap for every upload: clip parts and live segments.
        self.uploads = UploadScheduler(
            clips.max_concurrent_parts, clips.upload_bandwidth_bps,
            live_parallel=settings.live.max_parallel_uploads,
        )  # fmt: skip
        self.commands = CommandAdmission(
            district=settings.district,
            agent_id=settings.agent_id,
            metrics=self.metrics,
            handle=self._handle_command,
            publish=lambda delivery, kind: self.link.publish(delivery, kind),  # noqa: PLW0108 (link is built next)
        )
        self.link = MqttLink(
            settings.mqtt,
            f"agent-{settings.agent_id}",
            will=lambda session: self.publishing.presence("offline", session),
            metrics=self.metrics,
            on_connected=lambda: self.publishing.retained_state(self.link.session),
            command_filter=topics.commands_filter(settings.district),
            on_command=self.commands.receive,
        )

    @functools.cached_property
    def clips(self) -> ClipService:
        """Built on first use (by `run`): `discover` needs no S3 client and no spool."""
        return ClipService(
            self.settings.clips,
            self.settings.s3,
            district=self.settings.district,
            agent_id=self.settings.agent_id,
            pool=self.clip_pool,
            publish=lambda update: self.link.publish_receipt(encode(update)),
            policy=self.command_policy,
            camera_lookup=self.camera_target,
            metrics_registry=self.metrics.registry,
            scheduler=self.uploads,
        )

    @functools.cached_property
    def live(self) -> LiveService:
        """Built on first use (by `run`), beside the clip service whose uploader it shares."""
        return LiveService(
            self.settings.live,
            district=self.settings.district,
            agent_id=self.settings.agent_id,
            policy=self.command_policy,
            pool=self.clip_pool,
            lookup=self.camera_stream,
            uploader=self.clips.uploader,
            bucket=self.settings.s3.bucket,
            publish=lambda update: self.link.publish(encode(update), "live"),
            metrics_registry=self.metrics.registry,
        )

    def _handle_command(self, command: ClipRequest | ArmRequest | LiveRequest) -> None:
        if isinstance(command, LiveRequest):
            self.live.handle(command)
        else:
            self.clips.handle(command)

    async def run(self, stop: asyncio.Event, progress: Progress | None = None) -> None:
        """Start the parts, observe the cameras until `stop` is set, then stop the parts in reverse order."""
        await self._start()
        try:
            await self._observe(stop, progress)
        finally:
            await self._shutdown()

    async def _start(self) -> None:
        # Clips start before commands can arrive; the outbox holds results until the broker has them.
        self.command_policy.announce()
        await self.clips.start()
        self.live.start()
        self.commands.start()
        self.link.start()
        if not await self.link.wait_connected(10):
            log.warning("broker not reachable yet; going on, paho keeps retrying")

    async def _observe(self, stop: asyncio.Event, progress: Progress | None) -> None:
        """One sweep and discovery round, then the loops, until `stop` cancels whatever is in progress."""
        if await _unless_stopped(stop, self._guarded("first sweep", self._sweep_and_discover(progress))):
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch(stop))
                group.create_task(self._watch_streams(stop))
                group.create_task(self._resweep(stop))

    async def _shutdown(self) -> None:
        # New commands stop first (refused with a result), then in-flight clips get a grace period.
        self.commands.stop_accepting()
        await self.live.stop()
        await self.clips.stop(grace_s=self.settings.clips.shutdown_grace_s)
        self.clip_pool.close()
        self.streams.close()
        await self.link.stop(self.publishing.presence("offline", self.link.session))

    async def _sweep_and_discover(self, progress: Progress | None) -> None:
        await self.sweep(progress)
        await self.discover()

    async def sweep(self, progress: Progress | None = None) -> None:
        await self._sweep(self.registry, progress)
        assess_firmware(self.firmware, self.registry.records.values())
        self.publishing.changes(check_meta=True)

    async def _sweep(self, registry: Registry, progress: Progress | None = None) -> None:
        onvif = self.settings.onvif
        await sweep(
            registry,
            self.credentials,
            concurrency=onvif.concurrency,
            timeout_s=onvif.timeout_s,
            metrics=self.metrics,
            progress=progress,
            per_camera=onvif.per_camera,
            retry_book=self.retry_book,
            quirks_for=lambda record: record.quirks,
        )

    async def discover(self) -> Reconciliation | None:
        """WS-Discovery reconciled with the ledger, when discovery targets are configured."""
        if not self.settings.discovery.enabled:
            return None
        return await discover_and_reconcile(self.settings.discovery, self.registry, self.metrics)

    async def check_streams(self) -> None:
        await run_cycle(self.registry, self.credentials, self.streams)
        self.publishing.changes()

    async def _resweep(self, stop: asyncio.Event) -> None:
        """Re-enumerate and re-discover on a schedule: firmware upgrades, replaced and moved cameras."""
        while not await _stopped_within(stop, self.settings.health.sweep_interval_s):
            await _unless_stopped(stop, self._guarded("sweep", self._sweep_and_discover(None)))

    async def _watch_streams(self, stop: asyncio.Event) -> None:
        # The first cycle waits for one interval: enumeration just proved the cameras answer.
        while not await _stopped_within(stop, self.settings.health.stream_interval_s):
            await _unless_stopped(stop, self._guarded("stream check", self.check_streams()))

    async def _watch(self, stop: asyncio.Event) -> None:
        health = self.settings.health
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.onvif.concurrency)
        ) as s:
            while not stop.is_set():
                await self._guarded("liveness", self._liveness_round(s))
                if loop.time() >= next_snapshot:
                    self.publishing.snapshot()
                    next_snapshot = loop.time() + health.snapshot_interval_s
                await _stopped_within(stop, health.liveness_interval_s)

    async def _liveness_round(self, session: aiohttp.ClientSession) -> None:
        onvif = self.settings.onvif
        await check_all(
            self.registry,
            session,
            concurrency=onvif.concurrency,
            timeout_s=onvif.timeout_s,
            metrics=self.metrics,
        )
        await self._enumerate_newly_reachable()
        self.publishing.changes()

    async def _guarded(self, what: str, work: Coroutine[Any, Any, None]) -> None:
        """One round of a loop: an unexpected error is logged and counted, and the next round goes on."""
        try:
            await work
        except Exception:
            self.metrics.errors.labels("internal").inc()
            log.exception("%s failed; the next round goes on", what)

    async def _enumerate_newly_reachable(self) -> None:
        pending = [
            r
            for r in self.registry.records.values()
            if not r.observation.enumerated and not r.observation.error
        ]
        if not pending:
            return
        subset = Registry(self.registry.district, self.registry.agent_id, [r.ledger for r in pending])
        subset.records = {r.camera_id: r for r in pending}
        await self._sweep(subset)
        assess_firmware(self.firmware, pending)
        for record in pending:
            self.publishing.meta(record)

    def camera_target(self, camera_id: str) -> CameraTarget | None:
        """What the clip service needs of a camera: its main stream with credentials (stays in the agent)."""
        return self.camera_stream(camera_id, MAIN)

    def camera_stream(self, camera_id: str, stream: LiveStream) -> CameraTarget | None:
        """A camera's main (largest) or sub (smallest) stream with credentials (they stay in the agent)."""
        record = self.registry.records.get(camera_id)
        if record is None:
            return None
        info = record.info
        online = record.state in ("online", "degraded")
        if info is None or not info.streams:
            return CameraTarget(camera_id, "", online=False)
        pick = max if stream == MAIN else min
        chosen = pick(info.streams, key=lambda s: s.width * s.height)
        try:
            url = rtsp_url_for(record, chosen, self.credentials)
        except ValueError:
            return CameraTarget(camera_id, "", online=False)
        meta = {"manufacturer": info.manufacturer, "model": info.model, "firmware": info.firmware}
        return CameraTarget(
            camera_id, url, online=online, clock_offset_s=record.observation.clock_offset_s, meta=meta
        )


async def _unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> bool:
    """Run `work` until it ends or `stop` is set (then cancel it); True if it ran to its end."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False
    task.result()  # surface its exception
    return True


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True if `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
