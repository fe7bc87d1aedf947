"""A small WS-Discovery prober for tests and benchmarks (the agent has its own).

One asyncio UDP socket with a large receive buffer sends a Probe to every host and collects the
ProbeMatches until all answered or the timeout passed: bursts of thousands of answers fit in 8 MB where
the default ~208 KB buffer drops most of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from camsim.wsdiscovery import (
    ACTION_PROBE,
    MULTICAST_GROUP,
    NS_SOAP,
    NS_WSA,
    NS_WSD,
    MalformedMessageError,
    parse_envelope,
)

RCVBUF_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ProbeMatch:
    """What one answer said, and where it came from."""

    source: str  # IP address the datagram came from
    endpoint: str  # EndpointReference Address (urn:uuid:...)
    types: tuple[str, ...]
    scopes: tuple[str, ...]
    xaddrs: tuple[str, ...]
    metadata_version: int
    message_id: str
    relates_to: str


def build_probe(message_id: str, types: str | None = "dn:NetworkVideoTransmitter") -> bytes:
    types_el = f"<d:Types>{types}</d:Types>" if types else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header>'
        f"<a:MessageID>{message_id}</a:MessageID>"
        "<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"
        f"<a:Action>{ACTION_PROBE}</a:Action></s:Header>"
        f"<s:Body><d:Probe>{types_el}</d:Probe></s:Body></s:Envelope>"
    ).encode()


def parse_probe_matches(data: bytes, source: str) -> list[ProbeMatch]:
    """The ProbeMatch entries of a datagram; MalformedMessageError when it is not XML/SOAP."""
    root = parse_envelope(data)
    header = root.find(f"{{{NS_SOAP}}}Header")
    message_id = relates_to = ""
    if header is not None:
        message_id = (header.findtext(f"{{{NS_WSA}}}MessageID") or "").strip()
        relates_to = (header.findtext(f"{{{NS_WSA}}}RelatesTo") or "").strip()
    matches = root.findall(f"{{{NS_SOAP}}}Body/{{{NS_WSD}}}ProbeMatches/{{{NS_WSD}}}ProbeMatch")
    return [_match(m, source, message_id, relates_to) for m in matches]


def _match(m: etree._Element, source: str, message_id: str, relates_to: str) -> ProbeMatch:
    def words(tag: str) -> tuple[str, ...]:
        return tuple((m.findtext(f"{{{NS_WSD}}}{tag}") or "").split())

    version = (m.findtext(f"{{{NS_WSD}}}MetadataVersion") or "0").strip()
    return ProbeMatch(
        source=source,
        endpoint=(m.findtext(f"{{{NS_WSA}}}EndpointReference/{{{NS_WSA}}}Address") or "").strip(),
        types=words("Types"),
        scopes=words("Scopes"),
        xaddrs=words("XAddrs"),
        metadata_version=int(version) if version.isdigit() else 0,
        message_id=message_id,
        relates_to=relates_to,
    )


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, expected: dict[str, str] | None, sent_id: str | None) -> None:
        self.expected = expected  # host -> MessageID sent to it (unicast)
        self.sent_id = sent_id  # the one MessageID sent (multicast)
        self.found: dict[str, ProbeMatch] = {}
        self.done = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        host = str(addr[0])
        try:
            matches = parse_probe_matches(data, host)
        except MalformedMessageError:
            return
        wanted = self.expected.get(host) if self.expected is not None else self.sent_id
        for m in matches:
            if m.relates_to == wanted:
                self.found[host] = m
        if self.expected is not None and len(self.found) >= len(self.expected):
            self.done.set()


def _udp_socket(bind_ip: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    with contextlib.suppress(OSError, AttributeError):  # root may exceed net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, RCVBUF_BYTES)  # type: ignore[attr-defined]
    sock.bind((bind_ip, 0))
    sock.setblocking(False)
    return sock


async def _collect(
    collector: _Collector, sock: socket.socket, sends: list[tuple[bytes, tuple[str, int]]], timeout_s: float
) -> dict[str, ProbeMatch]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: collector, sock=sock)
    try:
        for payload, addr in sends:
            transport.sendto(payload, addr)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collector.done.wait(), timeout_s)
    finally:
        transport.close()
    return collector.found


async def probe_unicast(
    hosts: Iterable[str], port: int = 3702, timeout_s: float = 3.0, *, bind_ip: str = "127.0.0.1"
) -> dict[str, ProbeMatch]:
    """Probe every host at host:port; host -> its ProbeMatch (answers whose RelatesTo matches)."""
    expected = {host: f"urn:uuid:{uuid.uuid4()}" for host in hosts}
    sends = [(build_probe(mid), (host, port)) for host, mid in expected.items()]
    return await _collect(_Collector(expected, None), _udp_socket(bind_ip), sends, timeout_s)


async def probe_multicast(
    port: int = 3702, timeout_s: float = 3.0, *, interface_ip: str = "127.0.0.1", group: str = MULTICAST_GROUP
) -> dict[str, ProbeMatch]:
    """One Probe to the group; source IP -> ProbeMatch for every answer within timeout_s."""
    sock = _udp_socket(interface_ip)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface_ip))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("b", 1))
    message_id = f"urn:uuid:{uuid.uuid4()}"
    return await _collect(
        _Collector(None, message_id), sock, [(build_probe(message_id), (group, port))], timeout_s
    )
