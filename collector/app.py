"""Composition root of `cctv-collector run`: metrics, store, writer, subscriber, HTTP API.

Start order is sinks first, sources last (metrics and store, writer, HTTP API served by uvicorn on this event
loop, then the MQTT subscriber); SIGTERM or SIGINT stops the subscriber first, lets the writer drain and
commit what is queued (unless the store is unavailable: then it gives up at once), then stops the API (uvicorn
finishes the requests in flight). The MQTT session is persistent, so what agents publish meanwhile waits at
the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from prometheus_client import start_http_server

from collector.config import CollectorSettings
from collector.index.gauges import IndexGauges
from collector.index.store import Store, open_store
from collector.ingest.pipeline import Ingest
from collector.metrics import CollectorMetrics
from collector.platform.api import create_app
from collector.platform.context import Platform
from collector.platform.stores import ThreadStores

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
    stores = ThreadStores(lambda: open_store(url))
    platform = Platform(stores, lambda: _health(ingest), settings.platform)
    api = await _serve(create_app(platform), settings)
    ingest.subscriber.start()
    log.info("collector %s running (store %s)", settings.collector_id, url.split("://", 1)[0])
    try:
        await stop.wait()
    finally:
        log.info("stopping: unsubscribing, draining %s queued messages", ingest.queue_depth())
        await asyncio.to_thread(ingest.stop)
        api.server.should_exit = True
        await api.task
        stores.close()
        metrics_server.shutdown()
        log.info("collector stopped")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # run() owns SIGTERM and SIGINT: uvicorn must not replace its handlers


@dataclass
class _Api:
    server: uvicorn.Server
    task: asyncio.Task[None]


async def _serve(app: FastAPI, settings: CollectorSettings) -> _Api:
    """Listen (a port in use raises OSError here, at start) and serve with uvicorn on this loop."""
    host, port = settings.http.host, settings.http.port
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=10
    )
    server = _Server(config)
    return _Api(server, asyncio.create_task(server.serve(sockets=[sock])))


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
