"""One enumeration sweep over the district's cameras, with bounded concurrency and per-camera deadlines.

Concurrency is bounded twice (FACTS.md: 300 unbounded requests produced errors): at most `concurrency`
cameras at a time, sharing one HTTP session whose connection limit is also `concurrency`, and at most
`per_camera` calls in flight to any one camera. A camera that accepts TCP and never answers costs its own
deadline and holds one slot; the others go on. With a `RetryBook`, cameras still backing off (or refused
with unchanged credentials) are skipped and every result is booked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from prometheus_client import Histogram

from agent.backoff import RetryBook, fingerprint
from agent.credentials import Credentials, CredentialStore
from agent.errors import CameraError
from agent.firmware import Quirks
from agent.metrics import AgentMetrics
from agent.onvif_reader import CameraInfo, read_camera
from agent.onvif_soap import enumerate_camera, new_session
from agent.registry import CameraRecord, Registry

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
QuirksFor = Callable[[CameraRecord], Quirks | None]
Reader = Literal["soap", "zeep"]  # zeep: the strict reference reader (onvif-zeep-async), as a fallback


async def sweep(
    registry: Registry,
    credentials: CredentialStore,
    *,
    concurrency: int,
    timeout_s: float,
    metrics: AgentMetrics,
    progress: Progress | None = None,
    session: aiohttp.ClientSession | None = None,
    per_camera: int = 1,
    retry_book: RetryBook | None = None,
    quirks_for: QuirksFor | None = None,
    reader: Reader = "soap",
) -> float:
    """Enumerate every camera once (skipping those the retry book holds back); returns the duration in s."""
    started = time.monotonic()
    own_session = session is None
    http = new_session(concurrency) if session is None else session
    job = _Job(http, credentials, timeout_s, metrics, per_camera, retry_book, quirks_for, reader)
    slots = asyncio.Semaphore(concurrency)
    done = 0
    total = len(registry)

    async def one(record: CameraRecord) -> None:
        nonlocal done
        async with slots:
            await job.enumerate(record)
        done += 1
        if progress is not None:
            progress(done, total)

    try:
        async with asyncio.TaskGroup() as group:
            for record in registry.records.values():
                group.create_task(one(record))
    finally:
        if own_session:
            await http.close()
    duration = time.monotonic() - started
    metrics.sweep_duration.observe(duration)
    log.info(
        "sweep finished",
        extra={"cameras": total, "skipped": job.skipped, "duration_s": round(duration, 3)},
    )
    return duration


# 640x480 (VGA) and smaller is a sub stream; a camera that offers nothing larger has lost its main profile.
SUB_STREAM_MAX_PIXELS = 640 * 480


def sub_stream_only(info: CameraInfo) -> bool:
    return bool(info.streams) and max(s.width * s.height for s in info.streams) <= SUB_STREAM_MAX_PIXELS


@dataclass
class _Job:
    """What every camera of one sweep shares."""

    session: aiohttp.ClientSession
    credentials: CredentialStore
    timeout_s: float
    metrics: AgentMetrics
    per_camera: int
    retry_book: RetryBook | None
    quirks_for: QuirksFor | None
    reader: Reader
    skipped: int = 0
    # labels() takes a lock and a lookup per call: keep the children.
    _histograms: dict[str, Histogram] = field(default_factory=dict)

    def tolerated(self, record: CameraRecord, call: str, exc: CameraError) -> None:
        """An optional call failed: counted and logged; the camera is enumerated without that field."""
        self.metrics.errors.labels("optional_call").inc()
        log.info("optional %s failed, left empty: %s", call, exc, extra={"camera": record.camera_id})

    def observe(self, call: str, seconds: float) -> None:
        child = self._histograms.get(call)
        if child is None:
            child = self._histograms[call] = self.metrics.onvif_latency.labels(call)
        child.observe(seconds)

    async def enumerate(self, record: CameraRecord) -> None:
        creds = self.credentials.get(record.ledger.credentials_ref)
        key = fingerprint(record.ledger, creds) if self.retry_book is not None else None
        if self.retry_book is not None and not self.retry_book.may_try(record.camera_id, key):
            self.skipped += 1
            return
        started = time.monotonic()
        try:
            info = await self._read(record, creds)
        except CameraError as exc:
            self.metrics.errors.labels(exc.kind).inc()
            record.observation.error = exc
            if exc.kind == "unauthorized":
                record.observation.auth_error = exc
            if self.retry_book is not None:
                self.retry_book.failure(record.camera_id, exc, key)
            log.info("camera enumeration failed: %s", exc, extra={"camera": record.camera_id})
            return
        self.observe("enumerate", time.monotonic() - started)
        if self.retry_book is not None:
            self.retry_book.success(record.camera_id)
        record.info = info
        record.observation.error = None
        record.observation.auth_error = None
        record.observation.enumerated = True
        record.observation.sub_stream_only = sub_stream_only(info)
        record.observation.clock_offset_s = info.clock_offset_s

    async def _read(self, record: CameraRecord, creds: Credentials | None) -> CameraInfo:
        try:
            return await self._read_unguarded(record, creds)
        except CameraError:
            raise
        except Exception as exc:  # a camera's answer must never take the sweep of the others with it
            raise CameraError("hostile", f"unusable answer ({type(exc).__name__})") from None

    async def _read_unguarded(self, record: CameraRecord, creds: Credentials | None) -> CameraInfo:
        ledger = record.ledger
        if self.reader == "zeep":
            return await read_camera(ledger, creds, self.timeout_s)
        quirks = self.quirks_for(record) if self.quirks_for is not None else None
        return await enumerate_camera(
            self.session,
            ledger,
            creds,
            timeout_s=self.timeout_s,
            quirks=quirks,
            per_camera=self.per_camera,
            on_call=self.observe,
            on_tolerated=lambda call, exc: self.tolerated(record, call, exc),
            learned=record.learned,
        )
