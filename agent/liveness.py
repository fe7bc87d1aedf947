"""The cheap liveness probe: an unauthenticated GetSystemDateAndTime, which also yields the clock offset.

Hand-written SOAP over one shared aiohttp session (no zeep, no WSDL, no event subscription), parsed with a
hardened lxml parser and a size limit, so a hostile camera costs its timeout and nothing more.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from lxml import etree

from agent.errors import CameraError
from agent.onvif_answers import offset_from_whole_seconds, utc_time
from agent.safe_xml import DtdRefusedError, parse_untrusted

MAX_ANSWER_BYTES = 64 * 1024
_REQUEST = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    b'<s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
)
_HEADERS = {
    "Content-Type": 'application/soap+xml; charset=utf-8; action="http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime"'
}


@dataclass(frozen=True)
class Liveness:
    rtt_s: float
    clock_offset_s: float | None  # camera clock minus ours; None if the camera sent no UTC time


async def probe(
    session: aiohttp.ClientSession,
    host: str,
    port: int,
    timeout_s: float,
    path: str = "/onvif/device_service",
) -> Liveness:
    """Ask the camera for its clock; CameraError on anything but a well-formed answer."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            body = await _post(session, f"http://{host}:{port}{path}")
    except TimeoutError:
        raise CameraError("timeout", f"no answer within {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise CameraError("unreachable", type(exc).__name__) from None
    rtt = time.monotonic() - started
    camera_time = parse_utc_time(body)
    # Compare against our clock at the midpoint of the round trip.
    offset = None if camera_time is None else offset_from_whole_seconds(camera_time, time.time() - rtt / 2)
    return Liveness(rtt, offset)


async def _post(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.post(url, data=_REQUEST, headers=_HEADERS) as response:
        body = await response.content.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise CameraError("hostile", f"answer larger than {MAX_ANSWER_BYTES} bytes")
        if response.status >= 500 and b"Fault" not in body:
            raise CameraError("protocol", f"HTTP {response.status}")
        return body


def parse_utc_time(body: bytes) -> float | None:
    """The camera's UTCDateTime as a POSIX timestamp; CameraError for XML we must not or cannot read."""
    try:
        root = parse_untrusted(body)
    except DtdRefusedError as exc:
        raise CameraError("hostile", str(exc)) from None
    except etree.XMLSyntaxError:
        raise CameraError("protocol", "invalid XML") from None
    camera = utc_time(root)
    if camera is None and root.find(".//{http://www.w3.org/2003/05/soap-envelope}Fault") is not None:
        raise CameraError("protocol", "SOAP fault to GetSystemDateAndTime")
    return camera
