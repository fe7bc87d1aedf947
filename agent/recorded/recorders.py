"""The district's recorders (NVRs) from the recorders ledger, and what the agent learned of each: its clock
offset and whether it offers the Recording Search and Replay services (GetServices / GetCapabilities).

`refresh` runs with every sweep. A recorder that cannot be reached keeps the services it offered before (a
replay may still work) and its error, which the health report quotes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agent.credentials import CredentialStore
from agent.errors import CameraError
from agent.ledger import LedgerCamera, load_ledger
from agent.onvif_reader import RecordingServices
from agent.onvif_soap import Device, recording_services

log = logging.getLogger(__name__)


@dataclass
class Recorder:
    ledger: LedgerCamera  # camera_id is the recorder's id
    services: RecordingServices | None = None
    clock_offset_s: float | None = None
    error: str | None = None  # the last refresh's failure
    checked: bool = False


class Recorders:
    def __init__(self, path: Path | None) -> None:
        rows, problems = load_ledger(path) if path is not None else ([], [])
        for problem in problems:
            log.warning("recorders ledger row skipped: %s", problem)
        self.by_id = {row.camera_id: Recorder(row) for row in rows}

    def get(self, recorder_id: str) -> Recorder | None:
        return self.by_id.get(recorder_id)

    async def refresh(
        self, session: aiohttp.ClientSession, credentials: CredentialStore, *, timeout_s: float
    ) -> None:
        """Learn each recorder's services and clock offset (all at once: a district has few recorders)."""
        await asyncio.gather(
            *(self._refresh(r, session, credentials, timeout_s) for r in self.by_id.values())
        )

    async def _refresh(
        self,
        recorder: Recorder,
        session: aiohttp.ClientSession,
        credentials: CredentialStore,
        timeout_s: float,
    ) -> None:
        device = Device(recorder.ledger, credentials.get(recorder.ledger.credentials_ref))
        try:
            offset, services = await recording_services(session, device, timeout_s=timeout_s)
        except CameraError as exc:
            recorder.error = exc.message
            log.warning("recorder %s: %s", recorder.ledger.camera_id, exc)
        else:
            recorder.services, recorder.clock_offset_s, recorder.error = services, offset, None
        recorder.checked = True

    def device(self, recorder: Recorder, credentials: CredentialStore) -> Device:
        creds = credentials.get(recorder.ledger.credentials_ref)
        return Device(recorder.ledger, creds, None, recorder.clock_offset_s)
