"""WS-Discovery prober: finds ONVIF cameras by multicast on local interfaces and unicast over subnets.

Multicast does not cross subnets or VLANs, so a district also sweeps its camera subnets with unicast Probes
(FACTS.md). One UDP socket with a large receive buffer (a burst of thousands of ProbeMatches loses most of
them with the default ~208 KB) sends every Probe at a bounded rate and collects answers for a window.
Datagrams come from anyone: each is size-checked, refused if it carries a DTD, parsed with a hardened lxml
parser and accepted only if its RelatesTo names one of our Probes. Everything else is counted by kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from lxml import etree

from agent.safe_xml import DtdRefusedError, parse_untrusted

log = logging.getLogger(__name__)

MULTICAST_GROUP = "239.255.255.250"
MAX_DATAGRAM = 32 * 1024  # a ProbeMatch is ~1-2 KB; anything this large is not one
MAX_TARGETS = 65536  # a /16: larger sweeps are almost certainly a typo in the configuration
RCVBUF_BYTES = 8 * 1024 * 1024
SEND_TICK_S = 0.005  # probes leave in small batches every tick, so the rate stays bounded and smooth

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
ACTION_PROBE = NS_WSD + "/Probe"
ACTION_PROBE_MATCHES = NS_WSD + "/ProbeMatches"
ONVIF_SCOPE = "onvif://www.onvif.org/"

_HEADER = f"{{{NS_SOAP}}}Header"
_MATCH_PATH = f"{{{NS_SOAP}}}Body/{{{NS_WSD}}}ProbeMatches/{{{NS_WSD}}}ProbeMatch"


@dataclass(frozen=True)
class Discovered:
    """One device that answered. `source_ip` and `xaddrs` are camera addresses: they stay in the agent."""

    source_ip: str
    endpoint: str  # EndpointReference Address, usually urn:uuid:...: stable per device
    xaddrs: tuple[str, ...]
    scopes: tuple[str, ...]
    types: tuple[str, ...]  # local names: "NetworkVideoTransmitter", "Device"
    name: str | None = None  # from onvif://www.onvif.org/name/...
    hardware: str | None = None  # from .../hardware/...
    locations: tuple[str, ...] = ()  # from .../location/..., e.g. "district/jongno"


@dataclass
class DiscoveryResult:
    found: dict[str, Discovered] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)  # datagrams dropped, by kind
    sent: int = 0
    duplicates: int = 0  # a second answer from a source already found (multicast and unicast both hit)
    elapsed_s: float = 0.0


class RejectedError(ValueError):
    """A datagram we do not accept; `kind` is the counter it goes to."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def expand_targets(targets: Iterable[str]) -> list[str]:
    """Hosts of every target (an IPv4 address or a CIDR network), deduplicated, in order."""
    hosts: dict[str, None] = {}
    for target in targets:
        network = ipaddress.ip_network(target.strip(), strict=False)
        if not isinstance(network, ipaddress.IPv4Network):
            raise ValueError(f"only IPv4 targets are supported: {target!r}")
        if network.num_addresses + len(hosts) > MAX_TARGETS:
            raise ValueError(f"more than {MAX_TARGETS} hosts to probe (at {target!r})")
        members = [network.network_address] if network.prefixlen == 32 else network.hosts()
        for address in members:
            hosts[str(address)] = None
    return list(hosts)


def build_probe(message_id: str) -> bytes:
    """A Probe for ONVIF NetworkVideoTransmitters (SOAP 1.2, WS-Addressing 2004/08, as cameras expect)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}" xmlns:dn="{NS_DN}">'
        f"<s:Header><a:MessageID>{message_id}</a:MessageID>"
        "<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"
        f"<a:Action>{ACTION_PROBE}</a:Action></s:Header>"
        "<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>"
    ).encode()


def parse_probe_matches(data: bytes, source_ip: str, our_ids: set[str] | frozenset[str]) -> Discovered:
    """The first ProbeMatch of a datagram that answers one of `our_ids`; RejectedError otherwise."""
    if len(data) > MAX_DATAGRAM:
        raise RejectedError("oversized")
    try:
        root = parse_untrusted(data)
    except DtdRefusedError:
        raise RejectedError("dtd") from None
    except etree.XMLSyntaxError:
        raise RejectedError("malformed") from None
    if etree.QName(root).localname != "Envelope":
        raise RejectedError("malformed")
    action = (root.findtext(f"{_HEADER}/{{{NS_WSA}}}Action") or "").strip()
    match = root.find(_MATCH_PATH)
    if match is None or (action and action != ACTION_PROBE_MATCHES):
        raise RejectedError("not_probe_matches")  # Hello, Bye, other agents' Probes, Resolve...
    relates_to = (root.findtext(f"{_HEADER}/{{{NS_WSA}}}RelatesTo") or "").strip()
    if relates_to not in our_ids:
        raise RejectedError("unrelated")
    return _discovered(match, source_ip)


def _discovered(match: etree._Element, source_ip: str) -> Discovered:
    endpoint = (match.findtext(f"{{{NS_WSA}}}EndpointReference/{{{NS_WSA}}}Address") or "").strip()
    if not endpoint or len(endpoint) > 256:
        raise RejectedError("no_endpoint")
    scopes = _words(match, "Scopes")
    xaddrs = tuple(x for x in _words(match, "XAddrs") if x.startswith(("http://", "https://")))
    types = tuple(t.rpartition(":")[2] for t in _words(match, "Types"))
    return Discovered(
        source_ip=source_ip,
        endpoint=endpoint,
        xaddrs=xaddrs,
        scopes=scopes,
        types=types,
        name=_scope_value(scopes, "name/"),
        hardware=_scope_value(scopes, "hardware/"),
        locations=tuple(unquote(s[len(ONVIF_SCOPE) + 9 :]) for s in scopes if _is_scope(s, "location/")),
    )


def _words(match: etree._Element, tag: str, limit: int = 64) -> tuple[str, ...]:
    text = match.findtext(f"{{{NS_WSD}}}{tag}") or ""
    return tuple(word[:512] for word in text.split()[:limit])


def _is_scope(scope: str, kind: str) -> bool:
    return scope.lower().startswith(ONVIF_SCOPE + kind)


def _scope_value(scopes: Sequence[str], kind: str) -> str | None:
    for scope in scopes:
        if _is_scope(scope, kind):
            return unquote(scope[len(ONVIF_SCOPE) + len(kind) :])
    return None


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, result: DiscoveryResult, our_ids: set[str], waiting: set[str]) -> None:
        self.result = result
        self.our_ids = our_ids
        self.waiting = waiting  # unicast targets that have not answered yet
        self.all_answered = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        source = str(addr[0])
        try:
            found = parse_probe_matches(data, source, self.our_ids)
        except RejectedError as exc:
            self.result.rejected[exc.kind] += 1
            return
        if source in self.result.found:
            self.result.duplicates += 1
            return
        self.result.found[source] = found
        self.waiting.discard(source)
        if not self.waiting:
            self.all_answered.set()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from hosts without a responder arrives here on Linux: expected in sweeps.
        self.result.rejected["icmp_error"] += 1


def _open_socket(bind_ip: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # SO_RCVBUFFORCE passes net.core.rmem_max when we may (CAP_NET_ADMIN); SO_RCVBUF otherwise.
        force = getattr(socket, "SO_RCVBUFFORCE", None)
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, RCVBUF_BYTES)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setblocking(False)
        sock.bind((bind_ip, 0))
    except OSError:
        sock.close()
        raise
    log.debug("wsd socket receive buffer %s bytes", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return sock


async def probe(
    targets: Sequence[str],
    *,
    multicast_interfaces: Sequence[str] = (),
    port: int = 3702,
    window_s: float = 3.0,
    rate_per_s: float = 20000,
    bind_ip: str = "0.0.0.0",
) -> DiscoveryResult:
    """Probe `targets` (hosts or CIDRs) by unicast and each interface address by multicast.

    Collects answers for `window_s` after the last Probe left; returns earlier when there was no multicast
    Probe and every unicast target has answered.
    """
    hosts = expand_targets(targets)
    result = DiscoveryResult()
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    sock = _open_socket(bind_ip)
    our_ids: set[str] = set()
    collector = _Collector(result, our_ids, set(hosts))
    transport, _ = await loop.create_datagram_endpoint(lambda: collector, sock=sock)
    try:
        for interface in multicast_interfaces:
            _send_multicast(sock, interface, port, our_ids, result)
        await _send_unicast(
            transport, hosts, port=port, rate_per_s=rate_per_s, our_ids=our_ids, result=result
        )
        if hosts or multicast_interfaces:
            await _wait_window(collector, window_s, early=not multicast_interfaces)
    finally:
        transport.close()
        result.elapsed_s = time.monotonic() - started
    log.info(
        "wsd probe: %s sent, %s found, rejected %s in %.2f s",
        result.sent,
        len(result.found),
        dict(result.rejected),
        result.elapsed_s,
    )
    return result


def _new_probe(our_ids: set[str]) -> bytes:
    message_id = f"urn:uuid:{uuid.uuid4()}"
    our_ids.add(message_id)
    return build_probe(message_id)


def _send_multicast(
    sock: socket.socket,
    interface: str,
    port: int,
    our_ids: set[str],
    result: DiscoveryResult,
) -> None:
    # The outgoing interface is chosen per send by its address; the socket's own binding is unchanged.
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.sendto(_new_probe(our_ids), (MULTICAST_GROUP, port))
        result.sent += 1
    except OSError as exc:
        log.warning("wsd multicast probe on %s failed: %s", interface, exc)
        result.rejected["multicast_send_error"] += 1


async def _send_unicast(
    transport: asyncio.DatagramTransport,
    hosts: Sequence[str],
    *,
    port: int,
    rate_per_s: float,
    our_ids: set[str],
    result: DiscoveryResult,
) -> None:
    loop = asyncio.get_running_loop()
    batch = max(1, int(rate_per_s * SEND_TICK_S))
    next_tick = loop.time()
    for i in range(0, len(hosts), batch):
        for host in hosts[i : i + batch]:
            transport.sendto(_new_probe(our_ids), (host, port))
        result.sent += len(hosts[i : i + batch])
        next_tick += SEND_TICK_S
        await asyncio.sleep(max(0.0, next_tick - loop.time()))


async def _wait_window(collector: _Collector, window_s: float, *, early: bool) -> None:
    if not early:
        await asyncio.sleep(window_s)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collector.all_answered.wait(), window_s)
