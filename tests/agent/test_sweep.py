"""The enumeration sweep over simulated cameras, and the per-camera backoff it consults.

Cameras listen on 127.90.220.x (this module's part of 127.90.0.0/16) with free ports.
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pydantic import SecretStr

from agent.backoff import Backoff, RetryBook, fingerprint
from agent.credentials import Credentials, CredentialStore
from agent.errors import CameraError
from agent.firmware import FirmwareCatalog, Quirks
from agent.ledger import LedgerCamera
from agent.metrics import AgentMetrics
from agent.registry import CameraRecord, Registry
from agent.sweep import sweep
from camsim.model import CameraSpec
from camsim.onvif_server import OnvifServer
from camsim.personalities import load_personalities

# --- backoff ---


def test_backoff_grows_capped_with_full_jitter() -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        assert 0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 16, 30, 30, 30]
    many = [Backoff(1.0, 30.0, random.Random(seed)) for seed in range(200)]
    first = [b.next_delay() for b in many]
    assert 0.4 < statistics.mean(first) < 0.6  # uniform over [0, base]: spread out, not in lockstep
    backoff.reset()
    assert backoff.ceiling() == 1.0
    for _ in range(5000):  # a very long outage neither overflows nor exceeds the cap
        assert backoff.next_delay() <= 30.0
    with pytest.raises(ValueError):
        Backoff(base_s=10.0, cap_s=5.0)


def test_retry_book_backs_off_resets_and_blocks_bad_credentials() -> None:
    now = [1000.0]
    book = RetryBook(base_s=2.0, cap_s=60.0, clock=lambda: now[0], rng=random.Random(3))
    assert book.may_try("cam-1")
    delay = book.failure("cam-1", CameraError("timeout", "x"))
    assert 0 < delay <= 2.0  # seeded: a real wait, so the camera is refused until it has passed
    assert not book.may_try("cam-1")
    assert book.not_before("cam-1") == 1000.0 + delay
    now[0] += delay + 0.001
    assert book.may_try("cam-1") and book.not_before("cam-1") is None
    second = book.failure("cam-1", CameraError("unreachable", "x"))
    assert 0 <= second <= 4.0
    book.success("cam-1")
    assert book.may_try("cam-1") and len(book) == 0

    assert book.failure("cam-2", CameraError("unauthorized", "x"), key="k1") == float("inf")
    now[0] += 10_000
    assert not book.may_try("cam-2", key="k1")  # time alone does not unblock a rejected password
    assert book.not_before("cam-2") == float("inf") and book.blocked() == ["cam-2"]
    assert book.may_try("cam-2", key="k2")  # ledger or credentials changed


def test_fingerprint_changes_with_ledger_or_credentials_and_hides_the_password() -> None:
    camera = LedgerCamera(camera_id="gangnam-00001", host="127.90.220.1")
    creds = Credentials("admin", SecretStr("hunter2"))
    key = fingerprint(camera, creds)
    assert key == fingerprint(camera, Credentials("admin", SecretStr("hunter2")))
    assert key != fingerprint(camera, Credentials("admin", SecretStr("hunter3")))
    assert key != fingerprint(camera.model_copy(update={"onvif_port": 8080}), creds)
    assert "hunter2" not in key


# --- sweep against simulated cameras ---


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture
async def fleet() -> AsyncIterator[list[OnvifServer]]:
    """Twelve cameras, two of each vendor personality; all answer after 10 ms."""
    personalities = sorted(load_personalities().values(), key=lambda p: p.name)
    servers = []
    for n in range(12):
        host = f"127.90.220.{n + 1}"
        spec = CameraSpec(
            camera_id=f"gangnam-{n + 1:05d}",
            district="gangnam",
            host=host,
            onvif_port=_free_port(host),
            password=f"pw-{n}",
            mac=f"02:00:00:00:01:{n:02x}",
            personality=personalities[n % len(personalities)],
        )
        spec.faults.latency_ms = 10
        servers.append(OnvifServer(spec))
    await asyncio.gather(*(s.start() for s in servers))
    yield servers
    await asyncio.gather(*(s.stop() for s in servers))


def _registry(servers: list[OnvifServer]) -> tuple[Registry, CredentialStore]:
    cameras = [
        LedgerCamera(
            camera_id=s.spec.camera_id,
            host=s.spec.host,
            onvif_port=s.spec.onvif_port,
            credentials_ref=f"cam/{s.spec.camera_id}",
        )
        for s in servers
    ]
    store = CredentialStore(
        {f"cam/{s.spec.camera_id}": Credentials("admin", SecretStr(s.spec.password)) for s in servers}
    )
    return Registry("gangnam", "agent-1", cameras), store


async def test_sweep_enumerates_every_camera_and_records_call_latency(fleet: list[OnvifServer]) -> None:
    registry, store = _registry(fleet)
    metrics = AgentMetrics()
    seen: list[tuple[int, int]] = []
    await sweep(
        registry,
        store,
        concurrency=4,
        timeout_s=5,
        metrics=metrics,
        progress=lambda done, total: seen.append((done, total)),
        per_camera=2,
    )
    assert seen[-1] == (12, 12) and len(seen) == 12
    for server in fleet:
        record = registry.records[server.spec.camera_id]
        assert record.info is not None and record.observation.enumerated, record.observation.error
        assert record.info.mac == server.spec.mac
        assert record.info.manufacturer == server.spec.personality.manufacturer
    sample = metrics.registry.get_sample_value
    assert sample("cctv_agent_onvif_call_duration_seconds_count", {"call": "GetProfiles"}) == 12
    assert sample("cctv_agent_onvif_call_duration_seconds_count", {"call": "GetStreamUri"}) == 24
    assert sample("cctv_agent_onvif_call_duration_seconds_count", {"call": "enumerate"}) == 12
    assert sample("cctv_agent_sweep_duration_seconds_count") == 1


async def test_sweep_uses_firmware_quirks(fleet: list[OnvifServer]) -> None:
    """Quirks come from a previous enumeration's device strings."""
    registry, store = _registry(fleet)
    metrics = AgentMetrics()
    await sweep(registry, store, concurrency=12, timeout_s=5, metrics=metrics)
    catalog, _ = FirmwareCatalog.load()

    def quirks_for(record: CameraRecord) -> Quirks | None:
        if record.info is None:
            return None
        profile = catalog.match(record.info)
        return profile.quirks if profile is not None else None

    before = {s.spec.camera_id: s.requests_total for s in fleet}
    await sweep(registry, store, concurrency=12, timeout_s=5, metrics=metrics, quirks_for=quirks_for)
    assert all(r.observation.error is None for r in registry.records.values())
    asked = {s.spec.personality.name: s.requests_total - before[s.spec.camera_id] for s in fleet}
    assert asked["idis"] == 8  # prefer_get_capabilities: no GetServices refused first
    assert asked["hikvision"] == 9  # one Digest challenge, then the nonce is reused
    assert asked["generic"] == 8


async def test_retry_book_skips_refused_and_backing_off_cameras(fleet: list[OnvifServer]) -> None:
    registry, store = _registry(fleet)
    refused, hung = fleet[0], fleet[1]
    refused.spec.faults.wrong_credentials = True
    hung.spec.faults.hang = True
    metrics = AgentMetrics()
    book = RetryBook(base_s=60.0, cap_s=600.0)
    await sweep(registry, store, concurrency=12, timeout_s=1.0, metrics=metrics, retry_book=book)
    errors = {cid: r.observation.error for cid, r in registry.records.items() if r.observation.error}
    assert {cid: e.kind for cid, e in errors.items()} == {
        refused.spec.camera_id: "unauthorized",
        hung.spec.camera_id: "timeout",
    }
    assert metrics.registry.get_sample_value("cctv_agent_errors_total", {"kind": "timeout"}) == 1
    assert book.blocked() == [refused.spec.camera_id]

    requests = {s.spec.camera_id: s.requests_total for s in fleet}
    await sweep(registry, store, concurrency=12, timeout_s=1.0, metrics=metrics, retry_book=book)
    assert refused.requests_total == requests[refused.spec.camera_id]  # not asked again
    assert hung.requests_total == requests[hung.spec.camera_id]  # still backing off
    assert fleet[2].requests_total > requests[fleet[2].spec.camera_id]

    # A person fixes the password in the secrets file: the camera is tried, and answers.
    refused.spec.faults.wrong_credentials = False
    refused.spec.password = "new-password"
    _, store = _registry(fleet)
    await sweep(registry, store, concurrency=12, timeout_s=1.0, metrics=metrics, retry_book=book)
    record = registry.records[refused.spec.camera_id]
    assert record.observation.error is None and record.info is not None
    assert book.blocked() == []


async def test_reference_reader_remains_available(fleet: list[OnvifServer]) -> None:
    generic = [s for s in fleet if s.spec.personality.name == "generic"]
    registry, store = _registry(generic)
    await sweep(registry, store, concurrency=2, timeout_s=10, metrics=AgentMetrics(), reader="zeep")
    assert all(r.info is not None and r.info.mac for r in registry.records.values())
