"""One stream-health cycle over the district: pick each camera's cheapest stream, check its first keyframe,
and record the image faults (black, frozen, blurred, covered) or stream failures as observations."""

from __future__ import annotations

import logging

from agent.credentials import CredentialStore
from agent.onvif_reader import StreamInfo
from agent.registry import CameraRecord, Registry
from agent.stream_check import (
    CycleReport,
    StreamChecker,
    StreamTarget,
    check_streams,
    health_reasons,
    stream_url,
)

log = logging.getLogger(__name__)

SKIPPED_STATES = ("offline", "unauthorized")


def rtsp_url_for(record: CameraRecord, stream: StreamInfo, credentials: CredentialStore) -> str:
    """The stream's URL with the camera's credentials, always on the ledger's host: a camera (or whoever
    answers in its place) that names another host in GetStreamUri must not receive the credentials."""
    creds = credentials.get(record.ledger.credentials_ref)
    quirks = record.quirks
    port = record.ledger.rtsp_port if quirks is not None and quirks.rtsp_port_from_ledger else None
    username = creds.username if creds else None
    password = creds.password.get_secret_value() if creds else None
    return stream_url(stream.uri, username, password, port=port, host=record.ledger.host)


def stream_target(record: CameraRecord, credentials: CredentialStore) -> StreamTarget | None:
    """The camera's smallest stream; None if it has no stream to check (or a URI we cannot use)."""
    info = record.info
    if info is None or not info.streams or record.state in SKIPPED_STATES:
        return None
    smallest = min(info.streams, key=lambda s: s.width * s.height)
    if not smallest.uri:
        return None
    try:
        return StreamTarget(record.camera_id, rtsp_url_for(record, smallest, credentials))
    except ValueError:
        log.warning("unusable stream URI", extra={"camera": record.camera_id})
        return None


async def run_cycle(registry: Registry, credentials: CredentialStore, checker: StreamChecker) -> CycleReport:
    targets = [t for r in registry.records.values() if (t := stream_target(r, credentials)) is not None]
    report = await check_streams(targets, checker)
    for camera_id, check in report.results.items():
        registry.records[camera_id].observation.image_faults = health_reasons(check)
    return report
