"""WS-Discovery responder: unicast Probes from a raw UDP socket, garbage, faults, multicast in a netns."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from lxml import etree

from camsim.fleet import FleetOptions, build_specs
from camsim.model import CameraSpec
from camsim.probe import probe_unicast
from camsim.wsdiscovery import WsDiscoveryResponder

pytestmark = pytest.mark.integration

WSD_PORT = 13702
BASE_IP = "127.40.4.1"
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
}
ROOT = Path(__file__).resolve().parents[2]


def probe_xml(message_id: str, types: str | None) -> bytes:
    """Written by hand, the way ONVIF Device Manager sends it (SOAP 1.2, WSA 2004/08)."""
    types_el = f"<d:Types>{types}</d:Types>" if types is not None else ""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
    xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"
    xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"
    xmlns:dn="http://www.onvif.org/ver10/network/wsdl"
    xmlns:tds="http://www.onvif.org/ver10/device/wsdl">
  <s:Header>
    <a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>
    <a:MessageID>{message_id}</a:MessageID>
    <a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>
    <a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>
  </s:Header>
  <s:Body><d:Probe>{types_el}</d:Probe></s:Body>
</s:Envelope>""".encode()


def text(elem: etree._Element, path: str) -> str:
    value = elem.findtext(path, namespaces=NS)
    assert value is not None, f"{path} missing"
    return value


@pytest.fixture
def specs() -> list[CameraSpec]:
    return build_specs(FleetOptions("jongno", 6, BASE_IP, onvif_port=18080, rtsp_port=18554))


@pytest.fixture
async def responder(specs: list[CameraSpec]) -> AsyncIterator[WsDiscoveryResponder]:
    r = WsDiscoveryResponder(specs, port=WSD_PORT)
    await r.start()
    yield r
    await r.stop()


class Udp:
    """A plain UDP client socket with a receive timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    async def ask(self, host: str, payload: bytes, timeout_s: float = 2.0) -> tuple[bytes, str] | None:
        self.sock.sendto(payload, (host, WSD_PORT))
        self.sock.settimeout(timeout_s)
        try:
            data, addr = await asyncio.to_thread(self.sock.recvfrom, 65535)
        except TimeoutError:
            return None
        return data, addr[0]


@pytest.fixture
def udp() -> Iterator[Udp]:
    client = Udp()
    yield client
    client.sock.close()


async def test_unicast_probe_gets_a_probe_match_from_that_camera(
    responder: WsDiscoveryResponder, specs: list[CameraSpec], udp: Udp
) -> None:
    cam = specs[2]
    probe_id = f"urn:uuid:{uuid.uuid4()}"
    answer = await udp.ask(cam.host, probe_xml(probe_id, "dn:NetworkVideoTransmitter"))
    assert answer is not None
    data, source = answer
    assert source == cam.host  # sent from the camera's own address
    root = etree.fromstring(data)
    assert text(root, "s:Header/a:RelatesTo") == probe_id
    assert text(root, "s:Header/a:Action").endswith("/discovery/ProbeMatches")
    match = root.find("s:Body/d:ProbeMatches/d:ProbeMatch", namespaces=NS)
    assert match is not None
    assert text(match, "d:XAddrs") == f"http://{cam.host}:18080/onvif/device_service"
    scopes = text(match, "d:Scopes").split()
    assert any(s.startswith("onvif://www.onvif.org/name/") for s in scopes)
    assert "onvif://www.onvif.org/location/district/jongno" in scopes
    assert "onvif://www.onvif.org/hardware/" + cam.personality.model in scopes
    assert set(text(match, "d:Types").split()) == {
        "dn:NetworkVideoTransmitter",
        "tds:Device",
    }
    assert text(match, "a:EndpointReference/a:Address").startswith("urn:uuid:")
    assert text(match, "d:MetadataVersion") == "1"


async def test_message_ids_unique_and_endpoint_stable(
    responder: WsDiscoveryResponder, specs: list[CameraSpec], udp: Udp
) -> None:
    seen_ids, endpoints = set(), set()
    for types in ("dn:NetworkVideoTransmitter", "tds:Device", None):
        answer = await udp.ask(specs[0].host, probe_xml(f"urn:uuid:{uuid.uuid4()}", types))
        assert answer is not None, f"no answer to a Probe with Types={types}"
        root = etree.fromstring(answer[0])
        seen_ids.add(text(root, "s:Header/a:MessageID"))
        endpoints.add(text(root, ".//a:EndpointReference/a:Address"))
    assert len(seen_ids) == 3
    assert len(endpoints) == 1


@pytest.mark.parametrize(
    "types",
    [
        "dn:NetworkVideoDisplay",  # an ONVIF display, not a transmitter
        "other:Device",  # a Device, but of another namespace (e.g. a DPWS printer)
        "dn:NetworkVideoTransmitter other:Printer",  # a target must be of every listed type
    ],
)
async def test_other_device_types_get_no_answer(
    responder: WsDiscoveryResponder, specs: list[CameraSpec], udp: Udp, types: str
) -> None:
    probe = probe_xml("urn:uuid:2", types).replace(b"<d:Types>", b'<d:Types xmlns:other="urn:other-devices">')
    assert await udp.ask(specs[0].host, probe, timeout_s=0.3) is None
    assert responder.counters["probes"] == 1


async def test_garbage_is_counted_and_ignored(
    responder: WsDiscoveryResponder, specs: list[CameraSpec], udp: Udp
) -> None:
    host = specs[1].host
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'>&b;</s:Envelope>"
    )
    hello = (
        probe_xml("urn:uuid:3", None)
        .replace(b"<d:Probe>", b"<d:Hello>")
        .replace(b"</d:Probe>", b"</d:Hello>")
    )
    for junk in (os.urandom(512), b"<s:Envelope", bomb, b"<" * 40_000, b"", hello):
        udp.sock.sendto(junk, (host, WSD_PORT))
    answer = await udp.ask(host, probe_xml("urn:uuid:after-garbage", None))
    assert answer is not None, "a valid Probe after garbage must still be answered"
    assert b"urn:uuid:after-garbage" in answer[0]
    c = responder.counters
    assert c["malformed"] == 4  # random bytes, truncated XML, entity bomb, empty datagram
    assert c["oversized"] == 1
    assert c["ignored"] == 1  # a Hello is not a Probe
    assert c["probes"] == 1


async def test_offline_rebooting_and_hung_cameras_stay_silent(
    responder: WsDiscoveryResponder, specs: list[CameraSpec]
) -> None:
    specs[0].faults.offline = True
    specs[1].faults.hang = True
    specs[2].faults.reboot_every_s, specs[2].faults.reboot_down_s = 10.0, 9.99
    specs[2].faults.started_at -= 5  # inside the down window
    found = await probe_unicast([s.host for s in specs], WSD_PORT, timeout_s=0.5)
    assert set(found) == {s.host for s in specs[3:]}
    assert responder.counters["suppressed"] == 3


async def test_probe_unicast_helper_reads_every_answer(
    responder: WsDiscoveryResponder, specs: list[CameraSpec]
) -> None:
    found = await probe_unicast([s.host for s in specs], WSD_PORT, timeout_s=2.0)
    assert sorted(found) == sorted(s.host for s in specs)
    for spec in specs:
        assert found[spec.host].xaddrs == (f"http://{spec.host}:18080/onvif/device_service",)


MULTICAST_SCRIPT = textwrap.dedent("""
    import asyncio, json, subprocess, sys
    subprocess.run(["ip", "link", "set", "lo", "up", "multicast", "on"], check=True)
    subprocess.run(["ip", "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)
    from camsim.fleet import FleetOptions, build_specs
    from camsim.probe import probe_multicast
    from camsim.wsdiscovery import WsDiscoveryResponder

    async def main():
        specs = build_specs(FleetOptions("mapo", 5, "127.40.5.1", onvif_port=18080))
        specs[4].faults.offline = True
        responder = WsDiscoveryResponder(specs, port=13702, multicast=True, multicast_max_delay_s=0.2)
        await responder.start()
        found = await probe_multicast(13702, timeout_s=1.0)
        await responder.stop()
        print(json.dumps({h: m.xaddrs[0] for h, m in found.items()}))

    asyncio.run(main())
""")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"),
    reason="multicast on loopback needs root "
    "to create a network namespace (the host routing table must not change)",
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
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    # Every online camera answered, from its own address; the offline one did not.
    assert found == {f"127.40.5.{i}": f"http://127.40.5.{i}:18080/onvif/device_service" for i in range(1, 5)}
