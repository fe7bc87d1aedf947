"""ONVIF implementations we did not write: a bad answer to an optional call, and a SOAP stack without
WS-Security. Against camsim personalities that behave so; cameras listen on 127.77.2.x with free ports.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from pydantic import SecretStr

from agent.credentials import Credentials, CredentialStore
from agent.errors import CameraError
from agent.ledger import LedgerCamera
from agent.metrics import AgentMetrics
from agent.onvif_soap import Learned, enumerate_camera, new_session
from agent.registry import Registry
from agent.sweep import sweep
from camsim.model import AuthMode, CameraSpec, Personality
from camsim.onvif_server import OnvifServer
from tests.services import free_port

pytestmark = pytest.mark.integration

CREDS = Credentials("admin", SecretStr("pw-quirks"))
_hosts = (f"127.77.2.{n}" for n in itertools.count(1))
Start = Callable[[Personality], Awaitable[OnvifServer]]


@pytest_asyncio.fixture
async def start_camera() -> AsyncIterator[Start]:
    servers: list[OnvifServer] = []

    async def start(personality: Personality) -> OnvifServer:
        host = next(_hosts)
        n = len(servers) + 1
        password = CREDS.password.get_secret_value()
        spec = CameraSpec(
            camera_id=f"gangnam-{n:05d}", district="gangnam", host=host, onvif_port=free_port(),
            password=password, mac=f"02:00:00:00:77:{n:02x}", personality=personality,
        )  # fmt: skip
        server = OnvifServer(spec)
        await server.start()
        servers.append(server)
        return server

    yield start
    await asyncio.gather(*(s.stop() for s in servers))


def ledger(server: OnvifServer) -> LedgerCamera:
    spec = server.spec
    return LedgerCamera(
        camera_id=spec.camera_id, host=spec.host, onvif_port=spec.onvif_port, credentials_ref="cam"
    )


async def test_a_malformed_snapshot_uri_answer_leaves_the_snapshot_empty_not_the_camera_offline(
    start_camera: Start,
) -> None:
    broken = await start_camera(Personality(snapshot_uri_malformed=True))
    fine = await start_camera(Personality())
    registry = Registry("gangnam", "agent-1", [ledger(broken), ledger(fine)])
    metrics = AgentMetrics()
    await sweep(registry, CredentialStore({"cam": CREDS}), concurrency=2, timeout_s=5, metrics=metrics)

    record = registry.records[broken.spec.camera_id]
    assert record.observation.error is None and record.info is not None
    assert record.info.snapshot_uri == ""  # the optional field is left empty
    assert [s.token for s in record.info.streams] == ["main", "sub"]  # everything else was read
    assert record.info.mac == broken.spec.mac
    fine_info = registry.records[fine.spec.camera_id].info
    assert fine_info is not None and fine_info.snapshot_uri.endswith("/onvif/snapshot.jpg")
    assert metrics.registry.get_sample_value("cctv_agent_errors_total", {"kind": "optional_call"}) == 1
    assert metrics.registry.get_sample_value("cctv_agent_errors_total", {"kind": "protocol"}) is None


@pytest.mark.parametrize(("auth", "requests"), [("none", 9), ("http-digest", 10)])
async def test_a_camera_without_ws_security_is_asked_again_without_the_header(
    start_camera: Start, auth: AuthMode, requests: int
) -> None:
    """It answers GetSystemDateAndTime (no header) and faults MustUnderstand on our first signed call."""
    server = await start_camera(Personality(auth=auth, wsse_not_understood=True))
    calls: list[str] = []
    learned = Learned()
    async with new_session(4) as http:
        info = await enumerate_camera(
            http, ledger(server), CREDS, timeout_s=5, on_call=lambda c, _: calls.append(c), learned=learned
        )
        assert info.mac == server.spec.mac and len(info.streams) == 2
        # 8 calls; only the first signed one was refused (remembered after it), plus Digest's one challenge.
        assert len(calls) == 9 and calls[1] == calls[2] == "GetServices"
        assert server.requests_total == requests
        assert learned.wsse_refused
        again = await enumerate_camera(http, ledger(server), CREDS, timeout_s=5, learned=learned)
    assert (again.mac, again.streams) == (info.mac, info.streams)
    assert server.requests_total == 2 * requests - 1  # the next enumeration remembers: nothing refused


async def test_the_sweep_remembers_per_camera_that_ws_security_is_not_understood(start_camera: Start) -> None:
    plain = await start_camera(Personality(auth="none", wsse_not_understood=True))
    normal = await start_camera(Personality())
    registry = Registry("gangnam", "agent-1", [ledger(plain), ledger(normal)])
    store, metrics = CredentialStore({"cam": CREDS}), AgentMetrics()
    for _ in range(2):
        await sweep(registry, store, concurrency=2, timeout_s=5, metrics=metrics)
    assert all(r.observation.error is None and r.info is not None for r in registry.records.values())
    assert registry.records[plain.spec.camera_id].learned.wsse_refused
    assert not registry.records[normal.spec.camera_id].learned.wsse_refused
    assert plain.requests_total == 9 + 8  # one refused call in the first sweep, none in the second


async def test_a_camera_that_understands_ws_security_but_refuses_the_password_is_not_asked_without_it(
    start_camera: Start,
) -> None:
    server = await start_camera(Personality())
    server.spec.faults.wrong_credentials = True
    async with new_session(4) as http:
        with pytest.raises(CameraError) as refused:
            await enumerate_camera(http, ledger(server), CREDS, timeout_s=5)
    assert refused.value.kind == "unauthorized"
    assert server.requests_total == 2  # GetSystemDateAndTime, then the refused call: no retry without auth
