"""The fast SOAP client against simulated cameras (camsim), checked field by field against the reference
reader (onvif-zeep-async), and against a tiny hostile HTTP server written here.

Cameras listen on 127.90.x.y (this module's range) with free ports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr

from agent.credentials import Credentials
from agent.errors import CameraError
from agent.firmware import Quirks
from agent.ledger import LedgerCamera
from agent.onvif_reader import CameraInfo, read_camera
from agent.onvif_soap import MAX_ANSWER_BYTES, DigestChallenge, enumerate_camera, new_session
from camsim.model import AuthMode, CameraSpec, Personality
from camsim.onvif_server import OnvifServer
from camsim.personalities import load_personalities
from camsim.wsse import HttpDigest
from tests.hostile_xml import LAUGHS, utf16

pytestmark = pytest.mark.integration

PASSWORD = "s3cret&<pw>"  # characters that must be escaped in XML
CREDS = Credentials("admin", SecretStr(PASSWORD))
_hosts = (f"127.90.{a}.{b}" for a, b in itertools.product(range(1, 200), range(1, 255)))

Start = Callable[..., Awaitable[OnvifServer]]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ledger(server: OnvifServer) -> LedgerCamera:
    spec = server.spec
    return LedgerCamera(camera_id=spec.camera_id, host=spec.host, onvif_port=spec.onvif_port)


@pytest_asyncio.fixture
async def start_camera() -> AsyncIterator[Start]:
    servers: list[OnvifServer] = []

    async def start(personality: Personality | None = None, **fields: Any) -> OnvifServer:
        host = next(_hosts)
        spec = CameraSpec(
            camera_id=f"gangnam-{len(servers) + 1:05d}",
            district="gangnam",
            host=host,
            onvif_port=_free_port(host),
            password=PASSWORD,
            mac=f"02:00:00:00:00:{len(servers) % 256:02x}",
            serial=f"SN{len(servers):04d}",
            personality=personality or Personality(),
            **fields,
        )
        server = OnvifServer(spec)
        await server.start()
        servers.append(server)
        return server

    yield start
    await asyncio.gather(*(s.stop() for s in servers))


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session(100) as http:
        yield http


def assert_same(ours: CameraInfo, reference: CameraInfo) -> None:
    """Every field equal; clock offsets within the one-second resolution of ONVIF time."""
    assert dataclasses.replace(ours, clock_offset_s=0.0, snapshot_uri="") == dataclasses.replace(
        reference, clock_offset_s=0.0
    )
    assert [s.uri for s in ours.streams] == [s.uri for s in reference.streams]  # uri has compare=True
    assert ours.clock_offset_s is not None and reference.clock_offset_s is not None
    assert ours.clock_offset_s == pytest.approx(reference.clock_offset_s, abs=1.5)


PERSONALITIES = load_personalities()


@pytest.mark.parametrize(
    ("personality", "faults"),
    [
        (PERSONALITIES["generic"], {}),
        (PERSONALITIES["hanwha"], {}),  # H.265 only
        (PERSONALITIES["idis"], {}),  # wrong XAddr host, no GetServices
        (PERSONALITIES["dahua"], {}),  # wrong XAddr port, wrong RTSP port
        (PERSONALITIES["generic"], {"clock_skew_s": 3600.0}),
        (dataclasses.replace(PERSONALITIES["generic"], reject_utc_plus_offset=True), {"clock_skew_s": -42.0}),
    ],
    ids=[
        "generic",
        "h265-only",
        "wrong-host-no-getservices",
        "wrong-port",
        "skew-3600",
        "reject-plus-offset",
    ],
)
async def test_reads_what_the_reference_reader_reads(
    start_camera: Start, session: aiohttp.ClientSession, personality: Personality, faults: dict[str, float]
) -> None:
    server = await start_camera(personality)
    for name, value in faults.items():
        setattr(server.spec.faults, name, value)
    calls: list[str] = []
    ours = await enumerate_camera(
        session, ledger(server), CREDS, timeout_s=5, on_call=lambda name, s: calls.append(name)
    )
    reference = await read_camera(ledger(server), CREDS, 10)
    assert_same(ours, reference)
    spec = server.spec
    assert (ours.manufacturer, ours.mac, ours.serial) == (personality.manufacturer, spec.mac, spec.serial)
    assert ours.snapshot_uri == f"http://{spec.host}:{spec.onvif_port}/onvif/snapshot.jpg"
    assert ours.clock_offset_s == pytest.approx(faults.get("clock_skew_s", 0.0), abs=1.0)
    expected_codec = "h265" if personality.h265_only else "h264"
    assert [(s.token, s.codec) for s in ours.streams] == [("main", expected_codec), ("sub", expected_codec)]
    media_lookup = (
        ["GetServices", "GetCapabilities"] if personality.get_services_unsupported else ["GetServices"]
    )
    assert calls == [
        "GetSystemDateAndTime",
        *media_lookup,
        "GetDeviceInformation",
        "GetNetworkInterfaces",
        "GetProfiles",
        "GetStreamUri",
        "GetStreamUri",
        "GetSnapshotUri",
    ]


async def test_http_digest_camera(start_camera: Start, session: aiohttp.ClientSession) -> None:
    hikvision = PERSONALITIES["hikvision"]
    server = await start_camera(hikvision)
    with pytest.raises(CameraError) as refused:  # onvif-zeep-async speaks only WS-Security
        await read_camera(ledger(server), CREDS, 10)
    assert refused.value.kind == "unauthorized"
    before = server.requests_total
    ours = await enumerate_camera(session, ledger(server), CREDS, timeout_s=5)
    # One challenge, then the nonce is reused with a growing count: 8 calls, 9 requests.
    assert server.requests_total - before == 9
    server.spec.personality = dataclasses.replace(hikvision, auth="ws-security")  # read on every request
    assert_same(ours, await read_camera(ledger(server), CREDS, 10))
    server.spec.personality = hikvision
    quirks = Quirks(auth="http-digest", max_in_flight=2)  # two calls at once: both answer a challenge
    again = await enumerate_camera(session, ledger(server), CREDS, timeout_s=5, quirks=quirks, per_camera=2)
    assert dataclasses.replace(again, clock_offset_s=0.0) == dataclasses.replace(ours, clock_offset_s=0.0)
    with pytest.raises(CameraError) as wrong:
        await enumerate_camera(session, ledger(server), Credentials("admin", SecretStr("nope")), timeout_s=5)
    assert wrong.value.kind == "unauthorized"


def test_digest_answer_is_what_rfc_7616_servers_check() -> None:
    server = HttpDigest("Hikvision")
    now = time.time()
    challenge = DigestChallenge.parse(server.challenge(now))
    assert challenge is not None and challenge.qop_auth
    for _ in range(3):  # the same nonce with nc 1, 2, 3
        header = challenge.authorization("admin", PASSWORD, "POST", "/onvif/device_service")
        assert server.verify(
            header, method="POST", uri="/onvif/device_service", username="admin", password=PASSWORD, now=now
        )
    assert "nc=00000003" in header and not server.verify(
        header, method="POST", uri="/onvif/device_service", username="admin", password="other", now=now
    )
    assert DigestChallenge.parse('Basic realm="x"') is None
    assert DigestChallenge.parse('Digest realm="x"') is None


@pytest.mark.parametrize("mode", ["ws-security", "http-digest"])
async def test_wrong_credentials_are_unauthorized(
    start_camera: Start, session: aiohttp.ClientSession, mode: AuthMode
) -> None:
    server = await start_camera(dataclasses.replace(PERSONALITIES["generic"], auth=mode))
    server.spec.faults.wrong_credentials = True
    with pytest.raises(CameraError) as refused:
        await enumerate_camera(session, ledger(server), CREDS, timeout_s=5)
    assert refused.value.kind == "unauthorized" and not refused.value.retryable
    assert PASSWORD not in str(refused.value)
    with pytest.raises(CameraError) as anonymous:
        await enumerate_camera(session, ledger(server), None, timeout_s=5)
    assert anonymous.value.kind == "unauthorized"


async def test_hung_camera_times_out_while_fifty_others_finish(start_camera: Start) -> None:
    hung = await start_camera()
    hung.spec.faults.hang = True
    others = [await start_camera() for _ in range(50)]
    for other in others:
        other.spec.faults.latency_ms = 20
    async with new_session(60) as http:
        started = time.monotonic()
        hung_task = asyncio.create_task(enumerate_camera(http, ledger(hung), CREDS, timeout_s=1.5))
        infos = await asyncio.gather(*(enumerate_camera(http, ledger(s), CREDS, timeout_s=5) for s in others))
        assert not hung_task.done()  # the others did not wait for the hung one
        assert [i.serial for i in infos] == [s.spec.serial for s in others]
        with pytest.raises(CameraError) as timed_out:
            await hung_task
    elapsed = time.monotonic() - started
    assert timed_out.value.kind == "timeout"
    assert 1.4 < elapsed < 2.5


async def test_refused_connection_is_unreachable(session: aiohttp.ClientSession) -> None:
    host = next(_hosts)
    camera = LedgerCamera(camera_id="gangnam-09999", host=host, onvif_port=_free_port(host))
    with pytest.raises(CameraError) as refused:
        await enumerate_camera(session, camera, CREDS, timeout_s=2)
    assert refused.value.kind == "unreachable"


# --- hostile answers from a tiny HTTP server ---

XXE = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><a>&e;</a></s:Body></s:Envelope>'
)
UTF16_XXE = utf16(XXE)
BIG = b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'><s:Body>" + b"A" * 10_000_000
HTML = b"<html><body><h1>500 Internal Server Error</h1></body></html>"


def _http(
    status: int, body: bytes, *, chunked: bool = False, content_type: str = "application/soap+xml"
) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
    if not chunked:
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(c), c) for c in (body[i : i + 65536] for i in range(0, len(body), 65536))
    )
    return f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n"


ANSWERS = {
    "xxe": (_http(200, XXE), "hostile"),
    "billion-laughs": (_http(200, LAUGHS), "hostile"),
    "utf16-xxe": (_http(200, UTF16_XXE), "hostile"),
    "10mb-declared": (_http(200, BIG), "hostile"),
    "10mb-chunked": (_http(200, BIG, chunked=True), "hostile"),
    "invalid-xml": (_http(200, b"<s:Envelope><unclosed>"), "protocol"),
    "not-soap": (_http(200, b"<html/>"), "protocol"),
    "http-500-html": (_http(500, HTML, content_type="text/html"), "protocol"),
    "garbage": (b"\x00\x01 not http at all\r\n\r\n", "protocol"),
}


async def _hostile_server(answer: bytes) -> tuple[asyncio.Server, str, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up reading, as it should for oversized answers
        finally:
            writer.close()

    host = next(_hosts)
    server = await asyncio.start_server(handle, host, 0)
    return server, host, int(server.sockets[0].getsockname()[1])


@pytest.mark.parametrize("case", list(ANSWERS))
async def test_hostile_answers_are_contained(session: aiohttp.ClientSession, case: str) -> None:
    answer, kind = ANSWERS[case]
    server, host, port = await _hostile_server(answer)
    try:
        camera = LedgerCamera(camera_id="gangnam-06666", host=host, onvif_port=port)
        started = time.monotonic()
        with pytest.raises(CameraError) as failed:
            await enumerate_camera(session, camera, CREDS, timeout_s=3)
        assert failed.value.kind == kind, failed.value
        assert time.monotonic() - started < 2  # decided on the answer, not by the deadline
    finally:
        server.close()
        await server.wait_closed()
    assert len(BIG) > MAX_ANSWER_BYTES
