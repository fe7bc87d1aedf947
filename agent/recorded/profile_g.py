"""ONVIF Profile G calls: find a camera's recording (FindRecordings, GetRecordingSearchResults, EndSearch),
how far back it goes, and its replay URI (GetReplayUri). SOAP goes through agent/onvif_soap.py (auth, quirks,
size caps, hardened parsing); answers become plain dataclasses here, and faults become RecordingError.

Which recording is the camera's: on a recorder, the one whose Source/SourceId is the camera's ledger id (the
recorder's channels are named after the ledger; FindRecordings is scoped to that source); on the camera's own
storage, that one too, else its only recording. Times without a zone (a quirk of some firmware) are UTC.
A search some devices answer in pages (SearchState "Searching" first) is polled until "Completed".
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import aiohttp
from lxml import etree

from agent.errors import CameraError
from agent.onvif_answers import NSMAP, SoapFaultError
from agent.onvif_reader import RecordingServices
from agent.onvif_soap import Device, call_once

MAX_POLLS = 10
POLL_WAIT_S = 0.2
_STREAM_SETUP = (
    "<trp:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol>"
    "</tt:Transport></trp:StreamSetup>"
)
_UNKNOWN_TOKEN = ("ter:NoRecording", "ter:InvalidToken", "NoRecording", "InvalidToken")

Via = Literal["camera", "recorder"]
RecordingErrorKind = Literal["not_found", "unknown_token", "unreachable", "unauthorized", "protocol"]


class RecordingError(Exception):
    """A Profile G call failed; the message is safe to report (no address, no credential)."""

    def __init__(self, kind: RecordingErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: RecordingErrorKind = kind


@dataclass(frozen=True)
class Endpoint:
    """Where a camera's recordings are served: the camera itself or a recorder of the district ledger."""

    device: Device
    device_id: str  # the camera id, or the recorder's id in the recorders ledger
    via: Via
    services: RecordingServices


@dataclass(frozen=True)
class RecordingInfo:
    token: str
    source_id: str
    earliest: datetime | None
    latest: datetime | None


async def find_recording(
    session: aiohttp.ClientSession, endpoint: Endpoint, camera_id: str, *, timeout_s: float
) -> RecordingInfo:
    """The recording of ``camera_id`` on ``endpoint``; RecordingError("not_found") if there is none."""
    source = f"<tt:IncludedSources><tt:Token>{escape(camera_id)}</tt:Token></tt:IncludedSources>"
    body = (
        f"<tse:FindRecordings><tse:Scope>{source if endpoint.via == 'recorder' else ''}</tse:Scope>"
        "<tse:MaxMatches>16</tse:MaxMatches><tse:KeepAliveTime>PT10S</tse:KeepAliveTime></tse:FindRecordings>"
    )
    search = endpoint.services.search_path
    answer = await _call(session, endpoint, search, "FindRecordings", body, timeout_s=timeout_s)
    token = (answer.findtext("tse:SearchToken", "", NSMAP) or "").strip()
    if not token:
        raise RecordingError("protocol", "FindRecordings: no search token")
    try:
        found = await _results(session, endpoint, token, timeout_s)
    finally:
        end = f"<tse:EndSearch><tse:SearchToken>{escape(token)}</tse:SearchToken></tse:EndSearch>"
        with contextlib.suppress(RecordingError):  # else it expires on its own (KeepAliveTime)
            await _call(session, endpoint, search, "EndSearch", end, timeout_s=timeout_s)
    return _pick(found, camera_id, endpoint.via)


async def replay_path(
    session: aiohttp.ClientSession, endpoint: Endpoint, token: str, *, timeout_s: float
) -> str:
    """The path of the recording's replay URI (its host and port are not used: the ledger's are)."""
    token_xml = f"<trp:RecordingToken>{escape(token)}</trp:RecordingToken>"
    body = f"<trp:GetReplayUri>{_STREAM_SETUP}{token_xml}</trp:GetReplayUri>"
    answer = await _call(
        session, endpoint, endpoint.services.replay_path, "GetReplayUri", body, timeout_s=timeout_s
    )
    uri = (answer.findtext("trp:Uri", "", NSMAP) or "").strip()
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise RecordingError("protocol", "GetReplayUri: unparsable URI") from None
    if parts.scheme.lower() not in ("rtsp", "rtsps") or not parts.path:
        raise RecordingError("protocol", "GetReplayUri: not an RTSP URI")
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def _results(
    session: aiohttp.ClientSession, endpoint: Endpoint, token: str, timeout_s: float
) -> list[RecordingInfo]:
    body = (
        f"<tse:GetRecordingSearchResults><tse:SearchToken>{escape(token)}</tse:SearchToken>"
        "<tse:MinResults>1</tse:MinResults><tse:MaxResults>16</tse:MaxResults><tse:WaitTime>PT1S</tse:WaitTime>"
        "</tse:GetRecordingSearchResults>"
    )
    found: list[RecordingInfo] = []
    for _ in range(MAX_POLLS):
        path = endpoint.services.search_path
        answer = await _call(session, endpoint, path, "GetRecordingSearchResults", body, timeout_s=timeout_s)
        results = answer.find("tse:ResultList", NSMAP)
        if results is None:
            raise RecordingError("protocol", "GetRecordingSearchResults: no ResultList")
        found += [_information(info) for info in results.iterfind("tt:RecordingInformation", NSMAP)]
        if (results.findtext("tt:SearchState", "", NSMAP) or "").strip() == "Completed":
            return found
        await asyncio.sleep(POLL_WAIT_S)
    raise RecordingError("protocol", f"the search did not complete after {MAX_POLLS} polls")


def _information(info: etree._Element) -> RecordingInfo:
    return RecordingInfo(
        token=(info.findtext("tt:RecordingToken", "", NSMAP) or "").strip(),
        source_id=(info.findtext("tt:Source/tt:SourceId", "", NSMAP) or "").strip(),
        earliest=parse_time(info.findtext("tt:EarliestRecording", None, NSMAP)),
        latest=parse_time(info.findtext("tt:LatestRecording", None, NSMAP)),
    )


def _pick(found: list[RecordingInfo], camera_id: str, via: Via) -> RecordingInfo:
    usable = [r for r in found if r.token]
    match = [r for r in usable if r.source_id == camera_id]
    if match:
        return match[0]
    if via == "camera" and len(usable) == 1:
        return usable[0]
    raise RecordingError("not_found", f"no recording of {camera_id} on the {via}")


def parse_time(text: str | None) -> datetime | None:
    """An xs:dateTime; one without a zone is taken as UTC (some firmware omits the "Z")."""
    if not text or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _call(
    session: aiohttp.ClientSession, endpoint: Endpoint, path: str, name: str, body: str, *, timeout_s: float
) -> etree._Element:
    try:
        return await call_once(session, endpoint.device, path, name, body, timeout_s=timeout_s)
    except SoapFaultError as fault:
        if any(code in fault.subcodes for code in _UNKNOWN_TOKEN):
            raise RecordingError("unknown_token", f"{name}: the recording token does not exist") from None
        raise RecordingError(_kind(fault), fault.message[:300]) from None
    except CameraError as exc:
        raise RecordingError(_kind(exc), exc.message[:300]) from None


def _kind(exc: CameraError) -> RecordingErrorKind:
    if exc.kind == "unauthorized":
        return "unauthorized"
    return "unreachable" if exc.kind in ("unreachable", "timeout") else "protocol"
