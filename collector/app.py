"""Composition root of `cctv-collector run`: metrics, store, writer, command outbox, audit checkpoints,
nearest-camera index, live reaper, HTTP API, live follower, subscriber.

Start order is sinks first, sources last: metrics and store, the writer (answers to commands are recorded by
it), the command outbox publisher, the audit checkpointer, the nearest-camera index, the live reaper, the HTTP
API (uvicorn on this event loop), then the live follower and the MQTT subscriber. SIGTERM or SIGINT stops the
outbox, then the live follower and the reaper, then the subscriber, lets the writer drain and commit what is
queued (unless the store is unavailable: then it gives up at once), stops the API (uvicorn finishes the
requests in flight), then the index refresher, and writes a last audit checkpoint.
The MQTT session is persistent, so what agents publish meanwhile waits at the broker; unanswered commands wait
in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import start_http_server

from collector.access.gate import Access
from collector.audit.checkpoints import Checkpointer, open_bucket, trusted_keys
from collector.audit.verify import Verdict, verify
from collector.commands.outbox import OutboxPublisher
from collector.commands.signing import CommandSigner
from collector.config import CollectorSettings
from collector.console.serve import mount_console
from collector.index.gauges import IndexGauges
from collector.index.store import Store, open_store
from collector.ingest.pipeline import Ingest
from collector.live.follower import LiveFollower
from collector.live.metrics import LiveMetrics
from collector.live.reaper import Reaper
from collector.metrics import CollectorMetrics
from collector.platform.api import create_app
from collector.platform.context import Platform
from collector.platform.manifests import ClipObjects
from collector.platform.nearby import CameraIndex
from collector.platform.server import ApiServer
from collector.platform.stores import ThreadStores
from common.s3 import make_client
from common.settings import ConfigError

log = logging.getLogger(__name__)


def migrated_store(url: str) -> Store:
    store = open_store(url)
    store.migrate()
    return store


async def run(settings: CollectorSettings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives. A bad policy file raises ConfigError at start."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    access = _access(settings)
    metrics = CollectorMetrics()
    metrics.platform.expect_agencies(access.policy.agencies)
    url = settings.store.url
    migrated_store(url).close()
    metrics.registry.register(IndexGauges(lambda: open_store(url)))
    metrics_server, _ = start_http_server(settings.metrics_port, settings.http.host, metrics.registry)
    ingest = Ingest(settings, metrics)
    ingest.start_writer()
    signer = CommandSigner(settings.command_key_file, settings.commands.ttl_s)
    outbox = OutboxPublisher(settings, metrics.registry, lambda: open_store(url))
    outbox.start()
    checkpointer = _start_checkpointer(settings, metrics)
    cameras = CameraIndex(lambda: open_store(url), settings.platform.nearest_refresh_s)
    await asyncio.to_thread(cameras.start)
    objects = _clip_objects(settings)
    live_metrics = LiveMetrics(metrics.registry)
    reaper = _start_reaper(
        settings, access=access, signer=signer, outbox=outbox, objects=objects, live_metrics=live_metrics
    )
    stores = ThreadStores(lambda: open_store(url))
    platform = Platform(
        stores,
        lambda: _health(ingest),
        settings.platform,
        access=access,
        cameras=cameras,
        signer=signer,
        notify_outbox=outbox.notify,
        objects=objects,
        audit_verify=_audit_verifier(settings),
        metrics=metrics.platform,
        live=settings.live,
    )
    app = create_app(platform)
    if settings.console.enabled:
        mount_console(app, settings.console, settings.s3.endpoint_url if settings.s3.bucket else None)
    api = ApiServer(app, settings.http.host, settings.http.port, settings.http.api_threads)
    api.start()
    follower = LiveFollower(settings, metrics, live_metrics, lambda: open_store(url), time.time)
    follower.start()
    ingest.subscriber.start()
    log.info("collector %s running (store %s, command key %s)", settings.collector_id, url.split("://", 1)[0],
             signer.key_id)  # fmt: skip
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(outbox.stop)
        await asyncio.to_thread(follower.stop)
        await asyncio.to_thread(reaper.stop)
        log.info("stopping: unsubscribing, draining %s queued messages", ingest.queue_depth())
        await asyncio.to_thread(ingest.stop)
        await api.stop()
        stores.close()
        await asyncio.to_thread(cameras.stop)
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        metrics_server.shutdown()
        log.info("collector stopped")


def _start_checkpointer(settings: CollectorSettings, metrics: CollectorMetrics) -> Checkpointer | None:
    """Signed checkpoints of the audit chain to the WORM bucket, when one is configured."""
    if not settings.audit.bucket:
        return None
    checkpointer = Checkpointer.from_settings(settings, metrics.registry)
    checkpointer.start()
    return checkpointer


def _start_reaper(
    settings: CollectorSettings,
    *,
    access: Access,
    signer: CommandSigner,
    outbox: OutboxPublisher,
    objects: ClipObjects | None,
    live_metrics: LiveMetrics,
) -> Reaper:
    """The live sessions' reaper (idle, expired, closed, grant ended) and segment janitor, running."""
    url = settings.store.url
    reaper = Reaper(
        settings.live,
        policy=lambda: access.policy,
        signer=signer,
        notify_outbox=outbox.notify,
        objects=objects,
        metrics=live_metrics,
        open_store=lambda: open_store(url),
        clock=time.time,
    )
    reaper.start()
    return reaper


def _access(settings: CollectorSettings) -> Access:
    try:
        return Access.from_settings(settings.access)
    except ValueError as exc:  # an unreadable JWKS file (a bad policy file raises ConfigError itself)
        raise ConfigError("access.jwks_file", [str(exc)]) from exc


def _clip_objects(settings: CollectorSettings) -> ClipObjects | None:
    """The clip bucket for manifest checks and playback URLs (none without `s3.bucket`)."""
    if not settings.s3.bucket:
        log.warning("s3.bucket is not configured: clips get no manifest check and no playback URL")
        return None
    client = make_client(settings.s3)
    return ClipObjects(client, settings.s3.bucket, settings.platform.agent_keys_dir)


def _audit_verifier(settings: CollectorSettings) -> Callable[[Store], Verdict] | None:
    """`GET /v1/audit/verify`: the chain against the checkpoints in the audit bucket (None without one)."""
    if not settings.audit.bucket:
        return None
    bucket = open_bucket(settings)
    return lambda store: verify(store, bucket, trusted_keys(settings.audit))


def _health(ingest: Ingest) -> dict[str, Any]:
    connected = ingest.subscriber.subscribed.is_set()
    writer_alive = ingest.writer_alive()
    queued = ingest.queue_depth()
    store = ingest.health.status(queued)
    return {
        "ok": connected and writer_alive and store["store_ok"] and not store["ingest_stalled"],
        "mqtt_subscribed": connected,
        "writer_alive": writer_alive,
        **store,
        "queue_depth": queued,
        "committed_messages": ingest.committed,
        "unacknowledged_messages": ingest.subscriber.acks.waiting(),
        "time": time.time(),
    }
