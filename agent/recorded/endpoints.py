"""Which Profile G endpoint serves a camera's recordings: its recorder, when the ledger names one, else the
camera's own storage, when its enumeration found the Search and Replay services; else why there is none."""

from __future__ import annotations

from agent.credentials import CredentialStore
from agent.onvif_soap import Device
from agent.recorded.profile_g import Endpoint
from agent.recorded.recorders import Recorders
from agent.registry import Registry


def endpoint_for(
    camera_id: str, registry: Registry, recorders: Recorders, credentials: CredentialStore
) -> Endpoint | str:
    record = registry.records.get(camera_id)
    if record is None:
        return "unknown camera"
    recorder_id = record.ledger.recorder
    if recorder_id:
        recorder = recorders.get(recorder_id)
        if recorder is None:
            return f"recorder {recorder_id} is not in the recorders ledger"
        if recorder.services is None:
            why = recorder.error or ("not reached yet" if not recorder.checked else "offers no Search/Replay")
            return f"recorder {recorder_id}: {why}"
        return Endpoint(recorders.device(recorder, credentials), recorder_id, "recorder", recorder.services)
    info = record.info
    if info is not None and info.recording is not None:
        creds = credentials.get(record.ledger.credentials_ref)
        device = Device(record.ledger, creds, record.quirks, record.observation.clock_offset_s)
        return Endpoint(device, camera_id, "camera", info.recording)
    if info is None:
        return "the camera has not been enumerated yet (its recording services are unknown)"
    return "no recorder in the ledger, and the camera offers no Recording Search/Replay services"
