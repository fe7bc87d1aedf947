"""One enumeration sweep over the district's cameras, with bounded concurrency and per-camera deadlines.

A camera that accepts TCP and never answers costs its own timeout and holds one slot of the semaphore;
the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent.credentials import CredentialStore
from agent.errors import CameraError
from agent.metrics import AgentMetrics
from agent.onvif_reader import read_camera
from agent.registry import CameraRecord, Registry

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


async def sweep(
    registry: Registry,
    credentials: CredentialStore,
    *,
    concurrency: int,
    timeout_s: float,
    metrics: AgentMetrics,
    progress: Progress | None = None,
) -> float:
    """Enumerate every camera once; returns the sweep's duration in seconds."""
    started = time.monotonic()
    slots = asyncio.Semaphore(concurrency)
    done = 0
    total = len(registry)

    async def one(record: CameraRecord) -> None:
        nonlocal done
        async with slots:
            await _enumerate(record, credentials, timeout_s, metrics)
        done += 1
        if progress is not None:
            progress(done, total)

    async with asyncio.TaskGroup() as group:
        for record in registry.records.values():
            group.create_task(one(record))
    duration = time.monotonic() - started
    metrics.sweep_duration.observe(duration)
    log.info("sweep finished", extra={"cameras": total, "duration_s": round(duration, 3)})
    return duration


async def _enumerate(
    record: CameraRecord, credentials: CredentialStore, timeout_s: float, metrics: AgentMetrics
) -> None:
    creds = credentials.get(record.ledger.credentials_ref)
    started = time.monotonic()
    try:
        info = await read_camera(record.ledger, creds, timeout_s)
    except CameraError as exc:
        metrics.errors.labels(exc.kind).inc()
        record.observation.error = exc
        log.info("camera enumeration failed: %s", exc, extra={"camera": record.camera_id})
        return
    metrics.onvif_latency.labels("enumerate").observe(time.monotonic() - started)
    record.info = info
    record.observation.error = None
    record.observation.enumerated = True
    record.observation.clock_offset_s = info.clock_offset_s
