"""WS-Discovery responder (SOAP-over-UDP 1.1, WS-Discovery 2005/04, as ONVIF devices speak it).

Every camera owns a UDP socket on its own address (host:3702), so a unicast Probe to a camera gets that
camera's ProbeMatches and every answer leaves from the camera's address, as on a real network. One extra
socket joined to 239.255.255.250 answers multicast Probes for the whole fleet, each ProbeMatch sent from
the matching camera's own socket after a random delay (the spec's APP_MAX_DELAY spreads the burst).
Datagrams come from anyone: they are size-checked and parsed with a hardened lxml parser; garbage is
counted and dropped, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape

from lxml import etree

from agent.safe_xml import DtdRefusedError, parse_untrusted
from camsim.aio import settle
from camsim.model import CameraSpec
from camsim.onvif_server import DEVICE_PATH, WRONG_XADDR_HOST, WRONG_XADDR_PORT

log = logging.getLogger(__name__)

MULTICAST_GROUP = "239.255.255.250"
MAX_DATAGRAM = 32 * 1024  # a Probe is ~1 KB; anything this big is not one
NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"
ACTION_PROBE = NS_WSD + "/Probe"
ACTION_PROBE_MATCHES = NS_WSD + "/ProbeMatches"
WSA_ANONYMOUS = NS_WSA + "/role/anonymous"
_OUR_TYPES = {(NS_DN, "NetworkVideoTransmitter"), (NS_TDS, "Device")}
_SCOPE_MATCH_DEFAULT = {"", "http://schemas.xmlsoap.org/ws/2005/04/discovery/rfc3986"}


class MalformedMessageError(ValueError):
    """A datagram that is not a well-formed SOAP envelope."""


def parse_envelope(data: bytes) -> etree._Element:
    if len(data) > MAX_DATAGRAM:
        raise MalformedMessageError("oversized")
    try:
        root = parse_untrusted(data)
    except DtdRefusedError:
        raise MalformedMessageError("DTD not allowed") from None
    except etree.XMLSyntaxError as exc:
        raise MalformedMessageError(str(exc)) from None
    if root is None or etree.QName(root).localname != "Envelope":
        raise MalformedMessageError("not a SOAP envelope")
    return root


@dataclass(frozen=True)
class Probe:
    message_id: str
    types: frozenset[tuple[str, str]]  # (namespace or "", local name)
    scopes: tuple[str, ...]
    match_by: str


def _qnames(elem: etree._Element | None) -> frozenset[tuple[str, str]]:
    if elem is None or not elem.text:
        return frozenset()
    out = set()
    for token in elem.text.split():
        prefix, _, local = token.rpartition(":")
        out.add((elem.nsmap.get(prefix or None, "") or "", local))
    return frozenset(out)


def parse_probe(root: etree._Element) -> Probe | None:
    """The Probe in an envelope, or None when the message is some other action."""
    probe = root.find(f"{{{NS_SOAP}}}Body/{{{NS_WSD}}}Probe")
    if probe is None:
        return None
    message_id = (root.findtext(f"{{{NS_SOAP}}}Header/{{{NS_WSA}}}MessageID") or "").strip()
    if not message_id or len(message_id) > 256:
        raise MalformedMessageError("Probe without a usable MessageID")
    scopes_el = probe.find(f"{{{NS_WSD}}}Scopes")
    scopes = tuple((scopes_el.text or "").split()) if scopes_el is not None else ()
    match_by = scopes_el.get("MatchBy", "") if scopes_el is not None else ""
    return Probe(message_id, _qnames(probe.find(f"{{{NS_WSD}}}Types")), scopes, match_by)


def device_xaddr(spec: CameraSpec) -> str:
    """The device service address the camera advertises, with the same quirks as its ONVIF server."""
    host = WRONG_XADDR_HOST if spec.personality.xaddr_wrong_host else spec.host
    port = WRONG_XADDR_PORT if spec.personality.xaddr_wrong_port else spec.onvif_port
    return f"http://{host}:{port}{DEVICE_PATH}"


def camera_scopes(spec: CameraSpec) -> tuple[str, ...]:
    """The scopes GetScopes reports, so discovery and the device service agree."""
    base = "onvif://www.onvif.org/"
    return (
        f"{base}type/video_encoder",
        f"{base}type/NetworkVideoTransmitter",
        f"{base}Profile/Streaming",
        f"{base}hardware/{quote(spec.personality.model)}",
        f"{base}name/{quote(spec.name or spec.camera_id)}",
        f"{base}location/city/seoul",
        f"{base}location/district/{quote(spec.district)}",
    )


def endpoint_uuid(spec: CameraSpec) -> str:
    """Stable per camera across restarts (derived from the id and MAC)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'camsim:{spec.camera_id}:{spec.mac}')}"


def _types_match(wanted: frozenset[tuple[str, str]]) -> bool:
    ours_local = {local for _, local in _OUR_TYPES}
    # An unresolvable prefix (sloppy clients) is matched by local name.
    return all(t in _OUR_TYPES or (not t[0] and t[1] in ours_local) for t in wanted)


def _scopes_match(probe: Probe, scopes: tuple[str, ...]) -> bool:
    if not probe.scopes:
        return True
    if probe.match_by not in _SCOPE_MATCH_DEFAULT:
        return False  # only the default RFC 3986 prefix rule is supported
    ours = [s.lower().rstrip("/") for s in scopes]
    wanted = [s.lower().rstrip("/") for s in probe.scopes]
    return all(any(o == w or o.startswith(w + "/") for o in ours) for w in wanted)


class _CameraEndpoint(asyncio.DatagramProtocol):
    """One camera's discovery socket: its unicast Probes and all its answers."""

    def __init__(self, responder: WsDiscoveryResponder, spec: CameraSpec) -> None:
        self.responder = responder
        self.spec = spec
        self.scopes = camera_scopes(spec)
        self.transport: asyncio.DatagramTransport | None = None
        self.message_number = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        probe = self.responder.accept(data)
        if probe is not None:
            self.answer(probe, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("wsd %s socket error: %s", self.spec.camera_id, exc)

    def can_answer(self, probe: Probe) -> bool:
        faults = self.spec.faults
        if faults.hang or faults.unreachable():
            return False
        return _types_match(probe.types) and _scopes_match(probe, self.scopes)

    def answer(self, probe: Probe, addr: tuple[str, int]) -> None:
        if self.transport is None or not self.can_answer(probe):
            self.responder.counters["suppressed"] += 1
            return
        self.message_number += 1
        self.transport.sendto(self.probe_matches(probe.message_id), addr)
        self.responder.counters["matches_sent"] += 1

    def probe_matches(self, relates_to: str) -> bytes:
        spec = self.spec
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}" '
            f'xmlns:dn="{NS_DN}" xmlns:tds="{NS_TDS}"><s:Header>'
            f"<a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID>"
            f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
            f"<a:To>{WSA_ANONYMOUS}</a:To><a:Action>{ACTION_PROBE_MATCHES}</a:Action>"
            f'<d:AppSequence InstanceId="{self.responder.instance_id}" '
            f'MessageNumber="{self.message_number}"/></s:Header>'
            "<s:Body><d:ProbeMatches><d:ProbeMatch>"
            f"<a:EndpointReference><a:Address>{endpoint_uuid(spec)}</a:Address></a:EndpointReference>"
            "<d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>"
            f"<d:Scopes>{escape(' '.join(self.scopes))}</d:Scopes>"
            f"<d:XAddrs>{escape(device_xaddr(spec))}</d:XAddrs>"
            "<d:MetadataVersion>1</d:MetadataVersion>"
            "</d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"
        ).encode()


class _MulticastEndpoint(asyncio.DatagramProtocol):
    def __init__(self, responder: WsDiscoveryResponder) -> None:
        self.responder = responder

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        probe = self.responder.accept(data)
        if probe is not None:
            self.responder.answer_all(probe, (str(addr[0]), int(addr[1])))


class WsDiscoveryResponder:
    """Answers Probes for a fleet. start() binds one socket per camera (plus the multicast one)."""

    def __init__(
        self,
        specs: Sequence[CameraSpec],
        *,
        port: int = 3702,
        multicast: bool = False,
        interface_ip: str = "127.0.0.1",
        multicast_max_delay_s: float = 0.5,
    ) -> None:
        self.specs = list(specs)
        self.port = port
        self.multicast = multicast
        self.interface_ip = interface_ip
        self.multicast_max_delay_s = multicast_max_delay_s
        self.instance_id = int(time.time())
        self.counters = dict.fromkeys(
            ("probes", "matches_sent", "suppressed", "malformed", "oversized", "ignored"), 0
        )
        self._endpoints: list[_CameraEndpoint] = []
        self._mcast: asyncio.DatagramTransport | None = None
        self._rng = random.Random()

    async def start(self, chunk: int = 500) -> None:
        loop = asyncio.get_running_loop()
        for i in range(0, len(self.specs), chunk):
            await settle(self._bind(loop, spec) for spec in self.specs[i : i + chunk])
        if self.multicast:
            self._mcast = await self._bind_multicast(loop)

    async def _bind(self, loop: asyncio.AbstractEventLoop, spec: CameraSpec) -> None:
        endpoint = _CameraEndpoint(self, spec)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: endpoint, local_addr=(spec.host, self.port)
        )
        endpoint.transport = transport
        self._endpoints.append(endpoint)

    async def _bind_multicast(self, loop: asyncio.AbstractEventLoop) -> asyncio.DatagramTransport | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # several fleets may listen
            sock.bind((MULTICAST_GROUP, self.port))  # the group address: unicast stays on camera sockets
            mreq = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton(self.interface_ip))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            sock.close()
            log.warning(
                "multicast discovery disabled: cannot join %s on %s: %s",
                MULTICAST_GROUP,
                self.interface_ip,
                exc,
            )
            return None
        transport, _ = await loop.create_datagram_endpoint(lambda: _MulticastEndpoint(self), sock=sock)
        return transport

    async def stop(self) -> None:
        for endpoint in self._endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
        self._endpoints.clear()
        if self._mcast is not None:
            self._mcast.close()
            self._mcast = None
        await asyncio.sleep(0)  # let the transports' close callbacks run

    @property
    def sockets(self) -> int:
        return len(self._endpoints) + (1 if self._mcast else 0)

    def accept(self, data: bytes) -> Probe | None:
        """Parse a datagram; count and drop anything that is not a Probe we can read."""
        if len(data) > MAX_DATAGRAM:
            self.counters["oversized"] += 1
            return None
        try:
            probe = parse_probe(parse_envelope(data))
        except MalformedMessageError:
            self.counters["malformed"] += 1
            return None
        if probe is None:
            self.counters["ignored"] += 1  # Hello, Bye, Resolve, other responders' answers
            return None
        self.counters["probes"] += 1
        return probe

    def answer_all(self, probe: Probe, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for endpoint in self._endpoints:
            if endpoint.can_answer(probe):
                delay = self._rng.uniform(0, self.multicast_max_delay_s)
                loop.call_later(delay, endpoint.answer, probe, addr)
