"""Composition root of `cctv-collector run`: metrics, store, writer, command outbox, subscriber, HTTP API.

Start order is sinks first, sources last (metrics and store, writer, command outbox, HTTP API, then the MQTT
subscriber); SIGTERM or SIGINT stops the outbox, then the subscriber, lets the writer drain and commit what is
queued (unless the store is unavailable: then it gives up at once), then stops the API. The MQTT session is
persistent, so what agents publish meanwhile waits at the broker; unanswered commands wait in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from aiohttp import web
from prometheus_client import start_http_server

from collector.commands.outbox import OutboxPublisher
from collector.commands.signing import CommandSigner
from collector.config import CollectorSettings
from collector.index.gauges import IndexGauges
from collector.index.store import Store, open_store
from collector.ingest.pipeline import Ingest
from collector.metrics import CollectorMetrics
from collector.platform.api import StoreThread, make_app

log = logging.getLogger(__name__)


def migrated_store(url: str) -> Store:
    store = open_store(url)
    store.migrate()
    return store


async def run(settings: CollectorSettings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = CollectorMetrics()
    url = settings.store.url
    migrated_store(url).close()
    metrics.registry.register(IndexGauges(lambda: open_store(url)))
    metrics_server, _ = start_http_server(settings.metrics_port, settings.http.host, metrics.registry)
    ingest = Ingest(settings, metrics)
    ingest.start_writer()
    # The signer and the outbox's notify() are what the platform needs to send commands.
    signer = CommandSigner(settings.command_key_file, settings.commands.ttl_s)
    outbox = OutboxPublisher(settings, metrics.registry, lambda: open_store(url))
    outbox.start()
    reader = StoreThread(lambda: open_store(url))
    runner = web.AppRunner(make_app(reader, lambda: _health(ingest)))
    await runner.setup()
    await web.TCPSite(runner, settings.http.host, settings.http.port).start()
    ingest.subscriber.start()
    log.info("collector %s running (store %s, command key %s)", settings.collector_id, url.split("://", 1)[0],
             signer.key_id)  # fmt: skip
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(outbox.stop)
        log.info("stopping: unsubscribing, draining %s queued messages", ingest.queue_depth())
        await asyncio.to_thread(ingest.stop)
        await runner.cleanup()
        reader.close()
        metrics_server.shutdown()
        log.info("collector stopped")


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
