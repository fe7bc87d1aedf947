"""One simulated camera's ONVIF endpoint: HTTP/1.1 over asyncio streams, SOAP 1.2 Device and Media.

A process runs thousands of these (one per loopback address), so a server holds only its
listener, its open connections, a small nonce cache and a digest secret; templates and the
XML parser are shared at module level. Faults and personality quirks are read on every request,
so the control API can change them while the server runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from camsim import soap
from camsim.model import CameraSpec, StreamProfile, stream_profiles
from camsim.onvif_recording import REPLAY_PATH, SEARCH_PATH, RecordingService
from camsim.recording import Archive
from camsim.soap import SoapError, SoapRequest, attr, text
from camsim.wsse import AuthError, HttpDigest, NonceCache, verify_basic, verify_username_token

log = logging.getLogger(__name__)

DEVICE_PATH = "/onvif/device_service"
MEDIA_PATH = "/onvif/media_service"
SNAPSHOT_PATH = "/onvif/snapshot.jpg"
WRONG_XADDR_HOST = "192.168.1.64"  # a typical factory default address; only ever text in a reply
WRONG_XADDR_PORT = 8000
IDLE_TIMEOUT_S = 30.0  # keep-alive connections idle longer than this are closed
BODY_TIMEOUT_S = 10.0
LINGER_S, LINGER_BYTES = 1.0, 1024 * 1024  # bounds on discarding an unread body before closing
HEADER_LIMIT = 16 * 1024
KST_OFFSET_S = 9 * 3600

# A 16x16 grey baseline JPEG, served when no snapshot renderer is given.
TINY_JPEG = base64.b64decode(
    "/9j//gAQTGF2YzYyLjI4LjEwMgD/2wBDAAgEBAQEBAUFBQUFBQYGBgYGBgYGBgYGBgYHBwcICAgHBwcGBgcHCAgICAkJCQgICAgJCQoK"
    "CgwMCwsODg4RERT/xABLAAEAAAAAAAAAAAAAAAAAAAAAAQEAAAAAAAAAAAAAAAAAAAABEAEAAAAAAAAAAAAAAAAAAAAAEQEBAAAAAAAAAAAA"
    "AAAAAAAAIf/AABEIABAAEAMBIgACEQADEQD/2gAMAwEAAhEDEQA/AAAor//Z"
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}
_SOAP_TYPE = "application/soap+xml; charset=utf-8"
_SERVICE_NS = {
    DEVICE_PATH: soap.NS_DEVICE, MEDIA_PATH: soap.NS_MEDIA,
    SEARCH_PATH: soap.NS_SEARCH, REPLAY_PATH: soap.NS_REPLAY,
}  # fmt: skip
# Device calls that ONVIF lets anyone make (clock sync before authenticating).
_NO_AUTH = frozenset({"GetSystemDateAndTime"})
_PROFILE_NAMES = {"main": "MainStream", "sub": "SubStream"}


class _HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = _SOAP_TYPE
    extra: str = ""  # extra header lines, each ending in CRLF
    close: bool = False

    def encode(self, keep_alive: bool) -> bytes:
        connection = "keep-alive" if keep_alive and not self.close else "close"
        head = (
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}\r\nServer: camsim\r\n"
            f"Content-Type: {self.content_type}\r\nContent-Length: {len(self.body)}\r\n{self.extra}"
            f"Connection: {connection}\r\n\r\n"
        )
        return head.encode() + self.body


def _fault_response(err: SoapError, extra: str = "") -> _Response:
    return _Response(err.http_status, soap.fault_envelope(err), extra=extra, close=err.http_status == 413)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """Next request on a connection; None at a clean end of the connection."""
    try:
        async with asyncio.timeout(IDLE_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise _HttpError(431) from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _HttpError(400) from None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _HttpError(411)  # cameras want Content-Length framing
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _HttpError(400) from None
    if length < 0:
        raise _HttpError(400)
    if length > soap.MAX_BODY_BYTES:
        raise _HttpError(413)  # answered without reading the body, then the connection closes
    async with asyncio.timeout(BODY_TIMEOUT_S):
        body = await reader.readexactly(length) if length else b""
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return _Request(method, target, headers, body, keep_alive)


async def _linger(reader: asyncio.StreamReader) -> None:
    """Discard what the client is still sending, within bounds, so that closing the socket does not
    reset the connection before the client has read our error answer."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(LINGER_S):
            total = 0
            while total < LINGER_BYTES and (chunk := await reader.read(65536)):
                total += len(chunk)


class OnvifServer:
    """The ONVIF Device and Media (ver10) services and a snapshot URL of one simulated camera."""

    def __init__(
        self,
        spec: CameraSpec,
        *,
        snapshot_jpeg: Callable[[CameraSpec], bytes] | None = None,
        clock: Callable[[], float] = time.time,
        archive: Archive | None = None,
    ) -> None:
        """`archive`: recorded footage; the device offers Search and Replay if it serves any of it."""
        self.spec = spec
        self._recordings = RecordingService(spec, archive) if archive is not None else None
        self._snapshot_jpeg = snapshot_jpeg
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._requests = 0
        self._nonces: NonceCache | None = None  # created on first authenticated call
        self._digest: HttpDigest | None = None

    @property
    def requests_total(self) -> int:
        return self._requests

    async def start(self) -> None:
        """Listen on spec.host:spec.onvif_port."""
        self._server = await asyncio.start_server(
            self._on_connect, self.spec.host, self.spec.onvif_port, reuse_address=True, limit=HEADER_LIMIT
        )

    async def stop(self) -> None:
        """Close the listener and every open connection (hung ones included)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.spec.faults.unreachable():
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await _read_request(reader)
            except _HttpError as err:
                self._requests += 1
                body = soap.fault_envelope(SoapError("Sender", (), _REASONS.get(err.status, "Bad request")))
                writer.write(_Response(err.status, body, close=True).encode(False))
                await writer.drain()
                await _linger(reader)
                return
            if request is None:
                return
            self._requests += 1
            faults = self.spec.faults
            if faults.hang:  # read everything, answer nothing, until the client gives up
                while await reader.read(65536):
                    pass
                return
            response = self._respond(request)
            delay_ms = faults.latency_ms + self.spec.personality.slow_ms
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            writer.write(response.encode(request.keep_alive))
            await writer.drain()
            if not request.keep_alive or response.close:
                return

    def _respond(self, request: _Request) -> _Response:
        try:
            return self._route(request)
        except Exception:  # a simulator bug must cost one answer, not the connection or the fleet
            log.exception("camera %s failed to answer %s", self.spec.camera_id, request.target)
            return _fault_response(SoapError("Receiver", (), "Internal error"))

    def _route(self, request: _Request) -> _Response:
        path = request.target.split("?", 1)[0]
        if path == SNAPSHOT_PATH:
            return self._snapshot(request)
        if path not in _SERVICE_NS:
            return _Response(404, b"Not Found", content_type="text/plain")
        if request.method != "POST":
            return _Response(405, b"Use POST", content_type="text/plain", extra="Allow: POST\r\n")
        try:
            soap_request = soap.parse_envelope(request.body)
            handler = _HANDLERS.get((path, soap_request.action))
            if path in (SEARCH_PATH, REPLAY_PATH) and self._recording_xaddrs() is None:
                handler = None
            if handler is None or soap_request.namespace != _SERVICE_NS[path]:
                raise soap.action_not_supported(soap_request.action)
            personality = self.spec.personality
            if soap_request.token is not None and personality.wsse_not_understood:  # no WS-Security stack
                raise SoapError("MustUnderstand", (), "Header block wsse:Security was not understood")
            if soap_request.action not in _NO_AUTH:
                denied = self._authenticate(request, soap_request)
                if denied is not None:
                    return denied
            answer = soap.envelope(handler(self, soap_request))
            if soap_request.action == "GetSnapshotUri" and personality.snapshot_uri_malformed:
                answer = answer[: len(answer) // 2]  # a firmware bug: the envelope is cut off
            return _Response(200, answer)
        except SoapError as err:
            return _fault_response(err)

    # --- authentication ---

    def _authenticate(self, request: _Request, soap_request: SoapRequest) -> _Response | None:
        """None if the caller may proceed, else the refusal to send."""
        spec, personality = self.spec, self.spec.personality
        if personality.auth == "none":
            return None
        if personality.auth == "http-digest":
            if self._digest_ok(request):
                return None
            err = soap.not_authorized("HTTP Digest authentication required", 401)
            return _fault_response(err, self._challenge())
        if self._nonces is None:
            self._nonces = NonceCache()
        try:
            if spec.faults.wrong_credentials:
                raise AuthError("camera rejects the configured password (fault)")
            verify_username_token(
                soap_request.token,
                username=spec.username,
                password=spec.password,
                camera_now=self._camera_now(),
                nonces=self._nonces,
                reject_plus_offset=personality.reject_utc_plus_offset,
            )
        except AuthError as exc:
            log.debug("camera %s refused WS-Security: %s", spec.camera_id, exc)
            return _fault_response(soap.not_authorized())
        return None

    def _challenge(self) -> str:
        if self._digest is None:
            self._digest = HttpDigest(self.spec.personality.manufacturer or "camsim")
        return f"WWW-Authenticate: {self._digest.challenge(self._clock())}\r\n"

    def _digest_ok(self, request: _Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.spec.faults.wrong_credentials or self._digest is None or not header:
            return False
        return self._digest.verify(
            header,
            method=request.method,
            uri=request.target,
            username=self.spec.username,
            password=self.spec.password,
            now=self._clock(),
        )

    def _snapshot(self, request: _Request) -> _Response:
        if request.method != "GET":
            return _Response(405, b"Use GET", content_type="text/plain", extra="Allow: GET\r\n")
        if self.spec.personality.auth != "none":
            header = request.headers.get("authorization", "")
            basic_ok = not self.spec.faults.wrong_credentials and verify_basic(
                header, username=self.spec.username, password=self.spec.password
            )
            if not (basic_ok or self._digest_ok(request)):
                return _Response(401, b"Unauthorized", content_type="text/plain", extra=self._challenge())
        jpeg = self._snapshot_jpeg(self.spec) if self._snapshot_jpeg else TINY_JPEG
        return _Response(200, jpeg, content_type="image/jpeg")

    # --- values shared by several answers ---

    def _camera_now(self) -> float:
        return self._clock() + self.spec.faults.clock_skew_s

    def _xaddr(self, path: str) -> str:
        personality = self.spec.personality
        host = WRONG_XADDR_HOST if personality.xaddr_wrong_host else self.spec.host
        port = WRONG_XADDR_PORT if personality.xaddr_wrong_port else self.spec.onvif_port
        return f"http://{host}:{port}{path}"

    def _profile(self, token: str) -> StreamProfile:
        for profile in stream_profiles(self.spec):
            if profile.token == token:
                return profile
        raise soap.invalid_arg("ter:NoProfile", f"No profile with token {token!r}")

    def _encoder_xml(self, profile: StreamProfile, tag: str) -> str:
        h264 = soap.H264_BLOCK.format(gop=profile.gop) if profile.codec == "h264" else ""
        return soap.VIDEO_ENCODER_CONFIGURATION.format(
            tag=tag,
            ref=attr(f"vec_{profile.token}"),
            name=text(f"VideoEncoder_{profile.token}"),
            encoding="H264" if profile.codec == "h264" else "H265",
            width=profile.width,
            height=profile.height,
            fps=profile.fps,
            bitrate=profile.bitrate_kbps,
            h264=h264,
        )

    def _profile_xml(self, profile: StreamProfile) -> str:
        main_w, main_h = self.spec.main_size
        source = soap.VIDEO_SOURCE_CONFIGURATION.format(width=main_w, height=main_h)
        encoder = self._encoder_xml(profile, "tt:VideoEncoderConfiguration")
        name = _PROFILE_NAMES.get(profile.token, profile.token)
        return soap.PROFILE.format(ref=attr(profile.token), name=name, source=source, encoder=encoder)

    # --- Device service ---

    def get_device_information(self, _: SoapRequest) -> str:
        p = self.spec.personality
        return soap.DEVICE_INFORMATION.format(
            manufacturer=text(p.manufacturer),
            model=text(p.model),
            firmware=text(p.firmware),
            serial=text(self.spec.serial or self.spec.camera_id),
            hardware_id=text(p.hardware_id),
        )

    def get_system_date_and_time(self, _: SoapRequest) -> str:
        now = self._camera_now()
        return soap.SYSTEM_DATE_AND_TIME.format(utc=time.gmtime(now), local=time.gmtime(now + KST_OFFSET_S))

    def get_capabilities(self, req: SoapRequest) -> str:
        categories = [c for c in (soap.child_text(req.body, "Category") or "All").split() if c]
        category = categories[0] if len(categories) == 1 else "All"
        if category not in ("All", "Device", "Media"):
            raise SoapError("Receiver", ("ter:ActionNotSupported", "ter:NoSuchService"), "No such service")
        recording = self._recording_xaddrs()
        return soap.capabilities(category, self._xaddr(DEVICE_PATH), self._xaddr(MEDIA_PATH), recording)

    def get_services(self, req: SoapRequest) -> str:
        if self.spec.personality.get_services_unsupported:
            raise soap.action_not_supported(req.action)
        return soap.services(self._xaddr(DEVICE_PATH), self._xaddr(MEDIA_PATH), self._recording_xaddrs())

    def _recording_xaddrs(self) -> tuple[str, str] | None:
        """(Search, Replay) XAddrs when this device serves recordings (Profile G), else None."""
        if self._recordings is None or not self._recordings.serves():
            return None
        return self._xaddr(SEARCH_PATH), self._xaddr(REPLAY_PATH)

    def recordings(self) -> RecordingService:
        assert self._recordings is not None  # routed here only when _recording_xaddrs() is not None
        return self._recordings

    def get_network_interfaces(self, _: SoapRequest) -> str:
        return soap.NETWORK_INTERFACES.format(mac=text(self.spec.mac), address=text(self.spec.host))

    def get_scopes(self, _: SoapRequest) -> str:
        spec = self.spec
        base = "onvif://www.onvif.org/"
        fixed = [f"{base}type/video_encoder", f"{base}Profile/Streaming"]
        fixed.append(f"{base}hardware/{quote(spec.personality.model)}")
        configurable = [f"{base}name/{quote(spec.name or spec.camera_id)}", f"{base}location/city/seoul"]
        configurable.append(f"{base}location/district/{quote(spec.district)}")
        return soap.scopes(fixed, configurable)

    def get_hostname(self, _: SoapRequest) -> str:
        return soap.HOSTNAME.format(name=text(self.spec.camera_id))

    # --- Media service (ver10) ---

    def get_profiles(self, _: SoapRequest) -> str:
        profiles = "".join(self._profile_xml(p) for p in stream_profiles(self.spec))
        return f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>"

    def get_profile(self, req: SoapRequest) -> str:
        profile = self._profile(soap.child_text(req.body, "ProfileToken") or "")
        xml = self._profile_xml(profile).replace("trt:Profiles", "trt:Profile")
        return f"<trt:GetProfileResponse>{xml}</trt:GetProfileResponse>"

    def get_video_encoder_configurations(self, _: SoapRequest) -> str:
        configs = "".join(self._encoder_xml(p, "trt:Configurations") for p in stream_profiles(self.spec))
        tag = "trt:GetVideoEncoderConfigurationsResponse"
        return f"<{tag}>{configs}</{tag}>"

    def get_stream_uri(self, req: SoapRequest) -> str:
        profile = self._profile(soap.child_text(req.body, "ProfileToken") or "")
        protocol = soap.child_text(req.body, "StreamSetup", "Transport", "Protocol") or "RTSP"
        if protocol not in ("RTSP", "TCP", "UDP"):
            raise soap.invalid_arg("ter:InvalidStreamSetup", f"Unsupported transport {protocol!r}")
        spec, personality = self.spec, self.spec.personality
        port = spec.rtsp_port + 1 if personality.rtsp_uri_wrong_port else spec.rtsp_port
        credentials = ""
        if not personality.rtsp_uri_without_credentials:
            credentials = f"{quote(spec.username, safe='')}:{quote(spec.password, safe='')}@"
        uri = f"rtsp://{credentials}{spec.host}:{port}{profile.path}"
        return soap.MEDIA_URI.format(response="GetStreamUriResponse", uri=text(uri))

    def get_snapshot_uri(self, req: SoapRequest) -> str:
        self._profile(soap.child_text(req.body, "ProfileToken") or "")
        uri = f"http://{self.spec.host}:{self.spec.onvif_port}{SNAPSHOT_PATH}"
        return soap.MEDIA_URI.format(response="GetSnapshotUriResponse", uri=text(uri))


_Handler = Callable[[OnvifServer, SoapRequest], str]
_HANDLERS: dict[tuple[str, str], _Handler] = {
    (DEVICE_PATH, "GetDeviceInformation"): OnvifServer.get_device_information,
    (DEVICE_PATH, "GetSystemDateAndTime"): OnvifServer.get_system_date_and_time,
    (DEVICE_PATH, "GetCapabilities"): OnvifServer.get_capabilities,
    (DEVICE_PATH, "GetServices"): OnvifServer.get_services,
    (DEVICE_PATH, "GetNetworkInterfaces"): OnvifServer.get_network_interfaces,
    (DEVICE_PATH, "GetScopes"): OnvifServer.get_scopes,
    (DEVICE_PATH, "GetHostname"): OnvifServer.get_hostname,
    (MEDIA_PATH, "GetProfiles"): OnvifServer.get_profiles,
    (MEDIA_PATH, "GetProfile"): OnvifServer.get_profile,
    (MEDIA_PATH, "GetVideoEncoderConfigurations"): OnvifServer.get_video_encoder_configurations,
    (MEDIA_PATH, "GetStreamUri"): OnvifServer.get_stream_uri,
    (MEDIA_PATH, "GetSnapshotUri"): OnvifServer.get_snapshot_uri,
    (SEARCH_PATH, "FindRecordings"): lambda s, r: s.recordings().find_recordings(r),
    (SEARCH_PATH, "GetRecordingSearchResults"): lambda s, r: s.recordings().get_recording_search_results(r),
    (SEARCH_PATH, "EndSearch"): lambda s, r: s.recordings().end_search(r),
    (SEARCH_PATH, "GetRecordingSummary"): lambda s, r: s.recordings().get_recording_summary(r),
    (SEARCH_PATH, "GetRecordingInformation"): lambda s, r: s.recordings().get_recording_information(r),
    (REPLAY_PATH, "GetReplayUri"): lambda s, r: s.recordings().get_replay_uri(r, s.spec.rtsp_port),
}
