"""The agent's WS-Discovery prober against camsim's responder and against a hostile fake responder."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from lxml import etree

from agent.wsdiscovery import (
    MAX_DATAGRAM,
    RejectedError,
    expand_targets,
    parse_probe_matches,
    probe,
)
from camsim.fleet import FleetOptions, build_specs
from camsim.model import CameraSpec
from camsim.wsdiscovery import WsDiscoveryResponder, endpoint_uuid

ROOT = Path(__file__).resolve().parents[2]
PORT = 13712
NS = {"a": "http://schemas.xmlsoap.org/ws/2004/08/addressing"}


def probe_matches(relates_to: str, endpoint: str = "urn:uuid:fake-1", scopes: str = "") -> bytes:
    return f"""<?xml version="1.0"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
    xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"
    xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery">
  <s:Header><a:MessageID>urn:uuid:x</a:MessageID><a:RelatesTo>{relates_to}</a:RelatesTo>
    <a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action></s:Header>
  <s:Body><d:ProbeMatches><d:ProbeMatch>
    <a:EndpointReference><a:Address>{endpoint}</a:Address></a:EndpointReference>
    <d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>{scopes}</d:Scopes>
    <d:XAddrs>http://10.0.0.1/onvif/device_service file:///etc/passwd</d:XAddrs>
  </d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>""".encode()


def test_expand_targets_hosts_and_cidrs() -> None:
    hosts = expand_targets(["127.60.0.0/30", "127.60.0.2", "127.60.9.9"])
    assert hosts == ["127.60.0.1", "127.60.0.2", "127.60.9.9"]
    assert len(expand_targets(["127.20.0.0/20"])) == 4094
    with pytest.raises(ValueError, match="more than"):
        expand_targets(["10.0.0.0/8"])


def test_parse_reads_scopes_and_rejects_by_kind() -> None:
    scopes = " ".join(
        "onvif://www.onvif.org/" + s for s in ("name/Gate%201", "hardware/DS-2", "location/district/mapo")
    )
    found = parse_probe_matches(
        probe_matches("urn:uuid:ours", scopes=scopes), "127.60.0.7", {"urn:uuid:ours"}
    )
    assert (found.name, found.hardware, found.locations) == ("Gate 1", "DS-2", ("district/mapo",))
    assert found.xaddrs == ("http://10.0.0.1/onvif/device_service",)  # the file: URL is dropped
    cases = {
        b"\x00\xffnot xml": "malformed",
        b"<a>" * (MAX_DATAGRAM // 3 + 1): "oversized",
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><e>&x;</e>': "dtd",
        probe_matches("urn:uuid:someone-else"): "unrelated",
        b"<html/>": "malformed",
    }
    for data, kind in cases.items():
        with pytest.raises(RejectedError) as info:
            parse_probe_matches(data, "127.60.0.7", {"urn:uuid:ours"})
        assert info.value.kind == kind


@pytest.fixture
async def fleet() -> AsyncIterator[list[CameraSpec]]:
    specs = build_specs(FleetOptions("jongno", 300, "127.60.1.1", onvif_port=18080))
    responder = WsDiscoveryResponder(specs, port=PORT)
    await responder.start()
    yield specs
    await responder.stop()


@pytest.mark.integration
async def test_unicast_sweep_finds_every_camera(fleet: list[CameraSpec]) -> None:
    fleet[7].faults.offline = True  # an offline camera stays silent and is simply not found
    result = await probe([s.host for s in fleet], port=PORT, window_s=1.0)
    online = [s for s in fleet if not s.faults.offline]
    assert sorted(result.found) == sorted(s.host for s in online)
    assert sum(result.rejected.values()) == 0
    for spec in online:
        found = result.found[spec.host]
        assert found.endpoint == endpoint_uuid(spec)
        assert found.xaddrs == (f"http://{spec.host}:18080/onvif/device_service",)
        assert found.name == spec.name
        assert "district/jongno" in found.locations


@pytest.mark.integration
async def test_cidr_sweep_waits_the_window_and_finds_all(fleet: list[CameraSpec]) -> None:
    # 127.60.0.0/22 holds 1,022 hosts, 300 of them cameras: the prober cannot stop early.
    result = await probe(["127.60.0.0/22"], port=PORT, window_s=0.5)
    assert result.sent == 1022
    assert sorted(result.found) == sorted(s.host for s in fleet)
    assert 0.5 <= result.elapsed_s < 2.0


class HostileResponder(asyncio.DatagramProtocol):
    """Answers every Probe with what `replies(message_id)` returns, from its own address."""

    def __init__(self, replies: Callable[[str], list[bytes]]) -> None:
        self.replies = replies
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        message_id = etree.fromstring(data).findtext(".//a:MessageID", namespaces=NS) or ""
        assert self.transport is not None
        for reply in self.replies(message_id):
            self.transport.sendto(reply, addr)


async def serve(host: str, replies: Callable[[str], list[bytes]]) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: HostileResponder(replies), local_addr=(host, PORT)
    )
    return transport


XXE = b"""<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&x;</s:Body></s:Envelope>"""
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><l>&c;</l>'
)


@pytest.mark.integration
async def test_hostile_replies_are_counted_and_ignored(fleet: list[CameraSpec]) -> None:
    def replies(message_id: str) -> list[bytes]:
        return [
            b"\x00garbage\xff" * 10,
            XXE,
            LAUGHS,
            b"<x>" + b"A" * (MAX_DATAGRAM + 10) + b"</x>",
            probe_matches("urn:uuid:not-ours", endpoint="urn:uuid:spoofed"),
            probe_matches(message_id, endpoint="urn:uuid:the-real-one"),
        ]

    hostile = await serve("127.60.9.1", replies)
    try:
        targets = ["127.60.9.1", *(s.host for s in fleet[:20])]
        result = await probe(targets, port=PORT, window_s=3.0)
    finally:
        hostile.close()
    assert result.rejected == {"malformed": 1, "dtd": 2, "oversized": 1, "unrelated": 1}
    assert result.found["127.60.9.1"].endpoint == "urn:uuid:the-real-one"
    assert len(result.found) == 21  # the cameras behind it were found all the same


@pytest.mark.integration
async def test_reply_to_someone_elses_probe_is_ignored() -> None:
    hostile = await serve("127.60.9.2", lambda _: [probe_matches("urn:uuid:another-client")])
    try:
        result = await probe(["127.60.9.2"], port=PORT, window_s=0.5)
    finally:
        hostile.close()
    assert result.found == {}
    assert result.rejected == {"unrelated": 1}


MULTICAST_SCRIPT = textwrap.dedent("""
    import asyncio, json, subprocess
    subprocess.run(["ip", "link", "set", "lo", "up", "multicast", "on"], check=True)
    subprocess.run(["ip", "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)
    from camsim.fleet import FleetOptions, build_specs
    from camsim.wsdiscovery import WsDiscoveryResponder
    from agent.wsdiscovery import probe

    async def main():
        specs = build_specs(FleetOptions("mapo", 5, "127.60.5.1", onvif_port=18080))
        responder = WsDiscoveryResponder(specs, port=13702, multicast=True, multicast_max_delay_s=0.2)
        await responder.start()
        result = await probe([], multicast_interfaces=["127.0.0.1"], port=13702, window_s=1.0)
        await responder.stop()
        print(json.dumps(sorted(result.found)))

    asyncio.run(main())
""")


@pytest.mark.integration
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"),
    reason="multicast on loopback needs root to create a network namespace",
)
def test_multicast_probe_in_a_network_namespace() -> None:
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", MULTICAST_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [f"127.60.5.{i}" for i in range(1, 6)]
