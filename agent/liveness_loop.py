"""Periodic liveness of every camera (GetSystemDateAndTime), feeding observations into the registry."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from agent.errors import CameraError
from agent.liveness import Liveness, probe
from agent.metrics import AgentMetrics
from agent.registry import CameraRecord, Registry


async def check_all(
    registry: Registry,
    session: aiohttp.ClientSession,
    *,
    concurrency: int,
    timeout_s: float,
    metrics: AgentMetrics,
) -> None:
    """Probe every camera once, at most `concurrency` at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(record: CameraRecord) -> None:
        async with slots:
            await _check(record, session, timeout_s, metrics)

    async with asyncio.TaskGroup() as group:
        for record in registry.records.values():
            group.create_task(one(record))


async def _probe(session: aiohttp.ClientSession, host: str, port: int, timeout_s: float) -> Liveness:
    try:
        return await probe(session, host, port, timeout_s)
    except CameraError:
        raise
    except Exception as exc:  # one camera's answer must never fail the round of the others
        raise CameraError("hostile", f"unusable answer ({type(exc).__name__})") from None


async def _check(
    record: CameraRecord, session: aiohttp.ClientSession, timeout_s: float, metrics: AgentMetrics
) -> None:
    ledger = record.ledger
    started = time.monotonic()
    try:
        result = await _probe(session, ledger.host, ledger.onvif_port, timeout_s)
    except CameraError as exc:
        metrics.errors.labels(exc.kind).inc()
        metrics.camera_up.labels(record.camera_id).set(0)
        if record.observation.error is not None and record.observation.error.kind == "unauthorized":
            record.observation.auth_error = record.observation.error  # remembered until credentials work
        record.observation.error = exc
        return
    metrics.onvif_latency.labels("GetSystemDateAndTime").observe(time.monotonic() - started)
    metrics.camera_up.labels(record.camera_id).set(1)
    if result.clock_offset_s is not None:
        metrics.clock_offset.labels(record.camera_id).set(result.clock_offset_s)
        record.observation.clock_offset_s = result.clock_offset_s
    # A camera that answers again keeps an authorisation failure until an enumeration proves otherwise.
    if record.observation.error is not None and record.observation.error.kind != "unauthorized":
        record.observation.error = record.observation.auth_error
