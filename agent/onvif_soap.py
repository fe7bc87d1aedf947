"""A fast ONVIF enumeration client: SOAP 1.2 templates over one shared aiohttp session, parsed with lxml.

Why not zeep: zeep spends milliseconds of CPU per call building and parsing messages from the WSDLs, which
makes a 2,700-camera sweep CPU-bound (FACTS.md: 40 s with onvif-zeep-async, 12.6 s with raw templates).
`agent.onvif_reader` stays the strict reference; this module returns the same `CameraInfo`.

What it does for a camera: GetSystemDateAndTime (no auth; yields the clock offset that every later
WS-UsernameToken `Created` is shifted by), GetServices or GetCapabilities (only the *path* of the Media
XAddr is used: cameras advertise wrong hosts and ports, so we always talk to the address we reached),
GetDeviceInformation, GetNetworkInterfaces (MAC), GetProfiles, GetStreamUri per profile and GetSnapshotUri.
A camera that answers 401 with a Digest challenge (or whose firmware quirk says so) gets HTTP Digest.
Answers are size-capped here and read by agent/onvif_answers.py (no DTDs, entities or network access);
anything else is `hostile`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import aiohttp
from lxml import etree

from agent.credentials import Credentials
from agent.errors import CameraError
from agent.firmware import Quirks
from agent.http_digest import DigestChallenge
from agent.ledger import LedgerCamera
from agent.onvif_answers import (
    NSMAP,
    S12,
    TDS,
    TRP,
    TRT,
    TSE,
    TT,
    SoapFaultError,
    clock_offset,
    mac_address,
    parse_answer,
    stream_info,
)
from agent.onvif_reader import CameraInfo, RecordingServices

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 256 * 1024
DEVICE_PATH = "/onvif/device_service"
DEFAULT_MEDIA_PATH = "/onvif/media_service"

CallTimer = Callable[[str, float], None]  # (ONVIF call name, seconds)
Tolerated = Callable[[str, CameraError], None]  # an optional call failed; its field is left empty
OPTIONAL_CALLS = frozenset({"GetSnapshotUri"})  # many cameras have no snapshot, or answer it badly
T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")

_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_UT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"

_ENVELOPE = (
    f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{S12}" xmlns:tds="{TDS}" '
    f'xmlns:trt="{TRT}" xmlns:tt="{TT}" xmlns:tse="{TSE}" xmlns:trp="{TRP}">{{header}}<s:Body>{{body}}'
    "</s:Body></s:Envelope>"
)
_SECURITY = (
    f'<s:Header><wsse:Security xmlns:wsse="{_WSSE}" xmlns:wsu="{_WSU}" s:mustUnderstand="1">'
    "<wsse:UsernameToken><wsse:Username>{user}</wsse:Username>"
    f'<wsse:Password Type="{_UT}#PasswordDigest">{{digest}}</wsse:Password>'
    f'<wsse:Nonce EncodingType="{_UT.replace("username-token-profile", "soap-message-security")}'
    '#Base64Binary">{nonce}</wsse:Nonce><wsu:Created>{created}</wsu:Created></wsse:UsernameToken>'
    "</wsse:Security></s:Header>"
)
_STREAM_SETUP = (
    "<trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol>"
    "</tt:Transport></trt:StreamSetup>"
)
_BODIES = {
    "GetSystemDateAndTime": "<tds:GetSystemDateAndTime/>",
    "GetServices": "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>",
    "GetCapabilities": "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>",
    "GetDeviceInformation": "<tds:GetDeviceInformation/>",
    "GetNetworkInterfaces": "<tds:GetNetworkInterfaces/>",
    "GetProfiles": "<trt:GetProfiles/>",
    "GetStreamUri": f"<trt:GetStreamUri>{_STREAM_SETUP}<trt:ProfileToken>{{token}}</trt:ProfileToken>"
    "</trt:GetStreamUri>",
    "GetSnapshotUri": "<trt:GetSnapshotUri><trt:ProfileToken>{token}</trt:ProfileToken></trt:GetSnapshotUri>",
}
_NAMESPACES = {"trt": TRT, "tse": TSE, "trp": TRP}


def new_session(concurrency: int) -> aiohttp.ClientSession:
    """The one session of a sweep: at most `concurrency` connections, no cookies, no compression."""
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=5.0, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),  # every call runs under our own deadline
        skip_auto_headers=("Accept-Encoding",),
        auto_decompress=False,
    )


async def enumerate_camera(
    session: aiohttp.ClientSession,
    camera: LedgerCamera,
    creds: Credentials | None,
    *,
    timeout_s: float,
    quirks: Quirks | None = None,
    per_camera: int = 1,
    on_call: CallTimer | None = None,
    snapshot: bool = True,
    on_tolerated: Tolerated | None = None,
    learned: Learned | None = None,
) -> CameraInfo:
    """Device information, MAC, clock offset, profiles and URIs of one camera, within `timeout_s` overall.

    At most `per_camera` calls are in flight to the camera (capped by the quirk `max_in_flight`). A
    `protocol` failure of an optional call (OPTIONAL_CALLS: a SOAP fault or an answer we cannot read) leaves
    its field empty and is passed to `on_tolerated`; it does not fail the camera. `learned` is what earlier
    enumerations of this camera found out; it is updated in place.
    """
    in_flight = max(1, per_camera if quirks is None else min(per_camera, quirks.max_in_flight))
    learned = learned if learned is not None else Learned()
    cam = _Camera(session, camera, creds, quirks or Quirks(), in_flight, on_call, on_tolerated, learned)
    cam.deadline = time.monotonic() + timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await _enumerate(cam, snapshot)
    except TimeoutError:
        raise CameraError("timeout", f"no complete answer within {timeout_s:g} s") from None


@dataclass(frozen=True)
class Device:
    """A device to call outside an enumeration (Profile G search and replay): its ledger row (address and
    credentials reference), credentials, quirks and clock offset (device minus ours, dates WS-Security)."""

    ledger: LedgerCamera
    creds: Credentials | None = field(repr=False)
    quirks: Quirks | None = None
    clock_offset_s: float | None = None


async def call_once(
    session: aiohttp.ClientSession, device: Device, path: str, name: str, body: str, *, timeout_s: float
) -> etree._Element:
    """One SOAP call (`body`: the Body's content) within `timeout_s`."""
    cam = _device(session, device, timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            return await cam.call(path, name, body=body)
    except TimeoutError:
        raise CameraError("timeout", f"{name}: no answer within {timeout_s:g} s") from None


async def recording_services(
    session: aiohttp.ClientSession, device: Device, *, timeout_s: float
) -> tuple[float | None, RecordingServices | None]:
    """A recorder's clock offset and its Search and Replay services (None: it offers none)."""
    cam = _device(session, device, timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            when = await cam.call(DEVICE_PATH, "GetSystemDateAndTime", auth=cam.quirks.auth_needed_for_time)
            offset = clock_offset(when)
            cam.offset_s = offset if offset is not None and cam.quirks.adjust_time else 0.0
            return offset, (await service_paths(cam))[1]
    except TimeoutError:
        raise CameraError("timeout", f"no complete answer within {timeout_s:g} s") from None


def _device(session: aiohttp.ClientSession, device: Device, timeout_s: float) -> _Camera:
    quirks = device.quirks or Quirks()
    cam = _Camera(session, device.ledger, device.creds, quirks, 1, None, None, Learned())
    cam.deadline = time.monotonic() + timeout_s
    if device.clock_offset_s is not None and quirks.adjust_time:
        cam.offset_s = device.clock_offset_s
    return cam


@dataclass
class Learned:
    """What talking to a camera taught the agent, kept with the camera across enumerations."""

    # Its SOAP stack refused our WS-Security header as not understood: calls go without it (it then wants no
    # authentication, or HTTP Digest, which its 401 challenge brings).
    wsse_refused: bool = False


@dataclass
class _Camera:
    """Call state of one camera during one enumeration."""

    session: aiohttp.ClientSession
    ledger: LedgerCamera
    creds: Credentials | None
    quirks: Quirks
    in_flight: int
    on_call: CallTimer | None
    on_tolerated: Tolerated | None
    learned: Learned
    deadline: float = 0.0
    offset_s: float = 0.0  # camera clock minus ours, applied to every Created
    digest: DigestChallenge | None = None
    slots: asyncio.Semaphore = field(init=False)
    base: str = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.in_flight)
        host = self.ledger.host
        self.base = f"http://{f'[{host}]' if ':' in host else host}:{self.ledger.onvif_port}"

    async def call(
        self, path: str, name: str, *, auth: bool = True, token: str = "", close: bool = False,
        body: str | None = None,
    ) -> etree._Element:  # fmt: skip
        """One SOAP call; returns the first element of the answer's Body. `close`: the camera's last call;
        `body`: the request's Body content, for calls outside enumeration (default: the call's template)."""
        if body is None:
            body = _BODIES[name].format(token=escape(token)) if token else _BODIES[name]
        ns = _NAMESPACES.get(body[1:4], TDS)
        headers = {"Content-Type": f'application/soap+xml; charset=utf-8; action="{ns}/{name}"'}
        if close:  # real cameras have few connection slots: do not leave ours idling in the pool
            headers["Connection"] = "close"
        signed = self._signs(auth)
        try:
            return await self._call_once(path, name, body, headers, auth)
        except SoapFaultError as fault:
            if not (signed and "MustUnderstand" in fault.subcodes):
                raise
        self.learned.wsse_refused = True
        log.info("WS-Security not understood: calling without it", extra={"camera": self.ledger.camera_id})
        return await self._call_once(path, name, body, headers, auth)

    def _signs(self, auth: bool) -> bool:
        """Whether a call carries a WS-Security UsernameToken."""
        wsse = self.quirks.auth == "ws-security" and not self.digest and not self.learned.wsse_refused
        return auth and self.creds is not None and wsse

    async def _call_once(
        self, path: str, name: str, body: str, headers: dict[str, str], auth: bool
    ) -> etree._Element:
        remaining = self.deadline - time.monotonic()
        # The caller's deadline bounds the camera; a per-call timer only when the quirk is stricter.
        timeout = self.quirks.request_timeout_s if self.quirks.request_timeout_s < remaining else None
        async with self.slots:
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    status, answer = await self._exchange(path, body, headers, auth)
            except TimeoutError:
                raise CameraError("timeout", f"{name}: no answer within {timeout} s") from None
            except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as exc:  # not HTTP we can read
                raise CameraError("protocol", f"{name}: {type(exc).__name__}") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise CameraError("unreachable", f"{name}: {type(exc).__name__}") from None
            if self.on_call is not None:
                self.on_call(name, time.monotonic() - started)
        return parse_answer(status, answer, name)

    async def _exchange(self, path: str, body: str, headers: dict[str, str], auth: bool) -> tuple[int, bytes]:
        data = _ENVELOPE.format(header=self._security() if self._signs(auth) else "", body=body).encode()
        for attempt in range(2):
            if auth and self.digest is not None and self.creds is not None:
                password = self.creds.password.get_secret_value()
                headers["Authorization"] = self.digest.authorization(
                    self.creds.username, password, "POST", path
                )
            status, challenge, answer = await _post(self.session, self.base + path, data, headers)
            fresh = DigestChallenge.parse(challenge) if status == 401 and challenge and auth else None
            if fresh is None or self.creds is None or attempt == 1:
                return status, answer
            # Digest wanted (first call, or our nonce went stale): answer the challenge once.
            self.digest = fresh
            data = _ENVELOPE.format(header="", body=body).encode()
        raise AssertionError("unreachable")  # pragma: no cover

    def _security(self) -> str:
        assert self.creds is not None
        nonce = os.urandom(16)
        moment = time.time() + self.offset_s
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}"
        created += "Z" if self.quirks.zulu_timestamps else "+00:00"
        password = self.creds.password.get_secret_value()
        sha1 = hashlib.sha1(nonce + created.encode() + password.encode(), usedforsecurity=False)
        return _SECURITY.format(
            user=escape(self.creds.username),
            digest=base64.b64encode(sha1.digest()).decode(),
            nonce=base64.b64encode(nonce).decode(),
            created=created,
        )


async def _post(
    session: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]
) -> tuple[int, str | None, bytes]:
    async with session.post(url, data=data, headers=headers, allow_redirects=False) as response:
        length = response.content_length
        if length is not None and length > MAX_ANSWER_BYTES:
            raise CameraError("hostile", f"answer of {length} bytes exceeds {MAX_ANSWER_BYTES}")
        chunks: list[bytes] = []
        total = 0
        # read(n) returns what has arrived (up to n), so loop to EOF while counting.
        while chunk := await response.content.read(MAX_ANSWER_BYTES + 1):
            total += len(chunk)
            if total > MAX_ANSWER_BYTES:
                raise CameraError("hostile", f"answer larger than {MAX_ANSWER_BYTES} bytes")
            chunks.append(chunk)
        challenges = response.headers.getall("WWW-Authenticate", [])
        digest = next((c for c in challenges if c.lstrip().lower().startswith("digest")), None)
        return response.status, digest, b"".join(chunks)


# --- the enumeration sequence ---


async def _enumerate(cam: _Camera, snapshot: bool) -> CameraInfo:
    when = await cam.call(DEVICE_PATH, "GetSystemDateAndTime", auth=cam.quirks.auth_needed_for_time)
    offset = clock_offset(when)
    cam.offset_s = offset if offset is not None and cam.quirks.adjust_time else 0.0
    (media, recording), device = await _both(
        cam, lambda: service_paths(cam), lambda: cam.call(DEVICE_PATH, "GetDeviceInformation")
    )
    interfaces, profiles_el = await _both(
        cam, lambda: cam.call(DEVICE_PATH, "GetNetworkInterfaces"), lambda: cam.call(media, "GetProfiles")
    )
    profiles = profiles_el.findall("trt:Profiles", NSMAP)
    wanted = [("GetStreamUri", p) for p in profiles] + (
        [("GetSnapshotUri", profiles[0])] if snapshot and profiles else []
    )
    last = len(wanted) - cam.in_flight
    uris = await _all(
        cam, [_uri_job(cam, media, name, p, close=i >= last) for i, (name, p) in enumerate(wanted)]
    )
    d = {etree.QName(el).localname: (el.text or "").strip() for el in device}
    return CameraInfo(
        manufacturer=d.get("Manufacturer", ""),
        model=d.get("Model", ""),
        firmware=d.get("FirmwareVersion", ""),
        serial=d.get("SerialNumber", ""),
        hardware_id=d.get("HardwareId", ""),
        mac=mac_address(interfaces),
        clock_offset_s=offset,
        streams=[stream_info(p, uri) for p, uri in zip(profiles, uris, strict=False)],
        snapshot_uri=uris[len(profiles)] if snapshot and profiles else "",
        recording=recording,
    )


async def _both(
    cam: _Camera, first: Callable[[], Awaitable[A]], second: Callable[[], Awaitable[B]]
) -> tuple[A, B]:
    a, b = await _all(cam, [first, second])
    return cast(A, a), cast(B, b)


async def _all(cam: _Camera, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the jobs; concurrently only when the camera takes more than one call at a time."""
    if cam.in_flight == 1:
        return [await job() for job in jobs]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_awaited(job)) for job in jobs]
    except ExceptionGroup as eg:  # the first camera error speaks for the camera
        first = next((e for e in eg.exceptions if isinstance(e, CameraError)), None)
        if first is None:
            raise
        raise first from None
    return [t.result() for t in tasks]


async def _awaited(job: Callable[[], Awaitable[T]]) -> T:
    return await job()


async def service_paths(cam: _Camera) -> tuple[str, RecordingServices | None]:
    """Paths of the Media service and of the Search and Replay services (Profile G) if offered; their hosts
    and ports are ignored (cameras advertise wrong ones)."""
    if not cam.quirks.prefer_get_capabilities:
        try:
            services = await cam.call(DEVICE_PATH, "GetServices")
        except SoapFaultError as fault:
            if fault.kind == "unauthorized":
                raise
        else:
            paths = {
                (service.findtext("tds:Namespace", "", NSMAP) or "").strip(): service.findtext(
                    "tds:XAddr", "", NSMAP
                )
                for service in services.iterfind("tds:Service", NSMAP)
            }
            if TRT in paths:
                return _path(paths[TRT]), _recording(paths.get(TSE), paths.get(TRP))
    caps = await cam.call(DEVICE_PATH, "GetCapabilities")
    xaddr = caps.findtext(".//tt:Media/tt:XAddr", None, NSMAP)
    if xaddr is None:
        raise CameraError("protocol", "the camera advertises no Media service")
    search, replay = (caps.findtext(f".//tt:{name}/tt:XAddr", None, NSMAP) for name in ("Search", "Replay"))
    return _path(xaddr), _recording(search, replay)


def _recording(search: str | None, replay: str | None) -> RecordingServices | None:
    if not search or not replay:
        return None
    return RecordingServices(_path(search), _path(replay))


def _path(xaddr: str | None) -> str:
    try:
        parts = urlsplit((xaddr or "").strip())
    except ValueError:
        raise CameraError("protocol", "unparsable Media XAddr") from None
    path = parts.path or DEFAULT_MEDIA_PATH
    return f"{path}?{parts.query}" if parts.query else path


def _uri_job(
    cam: _Camera, media: str, name: str, profile: etree._Element, close: bool
) -> Callable[[], Awaitable[str]]:
    async def job() -> str:
        try:
            answer = await cam.call(media, name, token=profile.get("token", ""), close=close)
        except CameraError as exc:  # a fault or an unreadable answer: no reason to fail the camera
            if name not in OPTIONAL_CALLS or exc.kind != "protocol":
                raise
            if cam.on_tolerated is not None:
                cam.on_tolerated(name, exc)
            return ""
        return (answer.findtext("trt:MediaUri/tt:Uri", "", NSMAP) or "").strip()

    return job
