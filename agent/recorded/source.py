"""ONVIF Profile G as a recorded source (agent/clips/sources.py RecordedSource): the first implementation.

Flow of one request: the camera's endpoint (its own storage, learned at enumeration, or its recorder from the
district ledger, learned at each sweep) -> FindRecordings / GetRecordingSearchResults (the camera's
recording, its earliest and latest moment) -> a window that ended before the earliest fails here ("older than
the retention") -> GetReplayUri -> RTSP replay of [start, end) with `Require: onvif-replay`, an absolute
`Range: clock=...` and `Rate-Control: no` (agent/recorded/replay_capture.py). Connections always go to the
ledger's host and ports, never to the addresses a device advertises.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from agent.clips.capture import CaptureResult
from agent.clips.sources import SourceUnavailableError
from agent.recorded.profile_g import Endpoint, RecordingError, RecordingInfo, find_recording, replay_path
from agent.recorded.replay_capture import ReplayTarget, capture_replay
from agent.recorded.settings import RecordedSettings
from contract.manifest import Recording
from contract.messages import RecordedReach

SOURCE_NAME = "onvif-profile-g"
EndpointLookup = Callable[[str], Endpoint | str]  # the camera's endpoint, or why it has none


@dataclass(frozen=True)
class ProfileGClip:
    """A recording found for a window (agent/clips/sources.py RecordedClip)."""

    recording: Recording
    info: RecordingInfo
    target: ReplayTarget
    outcomes: Counter

    def capture(
        self, start: datetime, end: datetime, out_path: Path, cancel: threading.Event | None
    ) -> CaptureResult:
        replayed = capture_replay(self.target, start, end, out_path, cancel, earliest=self.info.earliest)
        self.outcomes.labels(replayed.outcome).inc()
        return replayed.result


class ProfileGSource:
    """Counts every request it serves in cctv_agent_recorded_requests_total{outcome}: a replay's outcome
    (agent/recorded/replay_capture.py OUTCOMES) or why no replay was tried (retention, not_found, ...)."""

    def __init__(
        self,
        endpoint_for: EndpointLookup,
        settings: RecordedSettings,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._endpoint_for, self._settings = endpoint_for, settings
        self._session: aiohttp.ClientSession | None = None
        self.outcomes = Counter(
            "cctv_agent_recorded_requests_total", "Recorded clip requests by outcome", ["outcome"],
            registry=registry or CollectorRegistry(),
        )  # fmt: skip

    def why_not(self, camera_id: str) -> str | None:
        found = self._endpoint_for(camera_id)
        return found if isinstance(found, str) else None

    async def locate(self, camera_id: str, start: datetime, end: datetime) -> ProfileGClip:
        try:
            return await self._locate(camera_id, start, end)
        except SourceUnavailableError as exc:
            self.outcomes.labels(exc.outcome).inc()
            raise

    async def _locate(self, camera_id: str, start: datetime, end: datetime) -> ProfileGClip:
        endpoint = self._endpoint(camera_id)
        try:
            info = await find_recording(self._http(), endpoint, camera_id, timeout_s=self._settings.timeout_s)
            if info.earliest is not None and end <= info.earliest:
                stamp = info.earliest.isoformat(timespec="seconds")
                why = f"window older than the retention: the recording starts at {stamp}"
                raise SourceUnavailableError(why, outcome="retention")
            if info.latest is not None and start >= info.latest:
                stamp = info.latest.isoformat(timespec="seconds")
                raise SourceUnavailableError(
                    f"window after the latest recorded moment ({stamp})", "after_latest"
                )
            path = await replay_path(self._http(), endpoint, info.token, timeout_s=self._settings.timeout_s)
        except RecordingError as exc:
            raise SourceUnavailableError(f"{endpoint.via} {endpoint.device_id}: {exc}", exc.kind) from None
        clip = ProfileGClip(
            self._recording(endpoint, info), info, self._target(endpoint, path), self.outcomes
        )
        return clip

    async def reach(self, camera_id: str) -> RecordedReach | None:
        found = self._endpoint_for(camera_id)
        if isinstance(found, str):
            return None
        now = datetime.now(UTC)
        try:
            info = await find_recording(self._http(), found, camera_id, timeout_s=self._settings.timeout_s)
        except RecordingError as exc:
            return RecordedReach(reachable=False, via=found.via, reason=str(exc), checked_at=now)
        return RecordedReach(
            reachable=True, via=found.via, earliest=info.earliest, latest=info.latest, checked_at=now
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _endpoint(self, camera_id: str) -> Endpoint:
        found = self._endpoint_for(camera_id)
        if isinstance(found, str):
            raise SourceUnavailableError(found, "no_endpoint")
        return found

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=32, keepalive_timeout=5.0)
            timeout = aiohttp.ClientTimeout(total=None)  # every call runs under its own deadline
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    def _recording(self, endpoint: Endpoint, info: RecordingInfo) -> Recording:
        offset = endpoint.device.clock_offset_s
        return Recording(
            token=info.token[:256], device=endpoint.device_id, source=SOURCE_NAME,
            clock_offset_s=None if offset is None else round(offset, 3),
        )  # fmt: skip

    def _target(self, endpoint: Endpoint, path: str) -> ReplayTarget:
        ledger, settings = endpoint.device.ledger, self._settings
        return ReplayTarget(
            ledger.host, ledger.rtsp_port, path, endpoint.device.creds,
            open_timeout_s=settings.open_timeout_s, read_timeout_s=settings.read_timeout_s,
        )  # fmt: skip


async def reach_all(
    source: ProfileGSource, camera_ids: list[str], concurrency: int
) -> dict[str, RecordedReach | None]:
    """Each camera's recorded reach, at most ``concurrency`` checks at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(camera_id: str) -> RecordedReach | None:
        async with slots:
            return await source.reach(camera_id)

    results = await asyncio.gather(*(one(c) for c in camera_ids))
    return dict(zip(camera_ids, results, strict=True))
