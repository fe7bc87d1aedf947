"""The district agent against a simulated district through a real Mosquitto.

Every health state and reason reached through camsim's faults, retained state restored after the broker
loses it, nothing secret on the wire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from agent.app import Agent
from camsim.fleet import Fleet
from camsim.model import Faults
from camsim.wsdiscovery import WsDiscoveryResponder
from contract import topics
from contract.codec import encode
from contract.messages import ClipRequest
from tests.integration.conftest import (
    EXPECTED,
    WSD_PORT,
    Recorder,
    agent_settings,
    assert_documented,
    eventually,
    running,
)
from tests.services import Mosquitto
from tests.signed_commands import signed

pytestmark = pytest.mark.integration


def status_of(recorder: Recorder, number: int) -> dict[str, object] | None:
    return recorder.get(topics.camera_status("gangnam", f"gangnam-{number:05d}"))


def all_states_reached(recorder: Recorder) -> bool:
    for number, (_, state, reasons) in EXPECTED.items():
        status = status_of(recorder, number)
        if status is None or status["state"] != state or status.get("reasons", []) != reasons:
            return False
    return True


async def test_every_health_state_reaches_the_broker_and_no_secret_does(
    district: tuple[Fleet, Path], mosquitto: Mosquitto
) -> None:
    fleet, directory = district
    recorder = Recorder(mosquitto.port)
    agent = Agent(agent_settings(directory, mosquitto))
    try:
        async with running(agent):
            try:
                await eventually(lambda: all_states_reached(recorder), 40, "every camera's expected state")
            except AssertionError:
                seen = {n: (s or {}).get("state") for n in EXPECTED if (s := status_of(recorder, n)) or True}
                reasons = {n: (status_of(recorder, n) or {}).get("reasons") for n in EXPECTED}
                raise AssertionError(f"states {seen}, reasons {reasons}") from None
            presence = recorder.get(topics.agent_state("gangnam"))
            assert presence is not None and presence["state"] == "online"
            assert presence["district_name"] == "강남구"
            meta = recorder.get(topics.camera_meta("gangnam", "gangnam-00001"))
            assert meta is not None and meta["lat"] and meta["identity_kind"] == "mac"
            assert {s["token"] for s in meta["streams"]} == {"main", "sub"}  # type: ignore[union-attr]
            dahua_meta = recorder.get(topics.camera_meta("gangnam", "gangnam-00008"))
            assert dahua_meta is not None and dahua_meta["firmware_profile"] == "dahua"
            sample = agent.metrics.registry.get_sample_value
            assert sample("cctv_agent_cameras", {"state": "offline"}) == 2
            assert sample("cctv_agent_cameras", {"state": "degraded"}) == 7
            long_meta = recorder.get(topics.camera_meta("gangnam", "gangnam-00012"))
            assert long_meta is not None and long_meta["manufacturer"] == "X" * 500  # cut to the contract
            assert sample("cctv_agent_camera_up", {"camera": "gangnam-00005"}) == 0
            assert sample("cctv_agent_camera_up", {"camera": "gangnam-00001"}) == 1
            skewed = sample("cctv_agent_camera_clock_offset_seconds", {"camera": "gangnam-00002"})
            assert abs((skewed or 0) - 90) < 2
            assert sample("cctv_agent_mqtt_connected") == 1
            assert (sample("cctv_agent_errors_total", {"kind": "timeout"}) or 0) >= 1
            health = topics.health("gangnam")
            await eventually(lambda: recorder.get(health) is not None, 5, "a health snapshot")
            snapshot = recorder.get(health)
            assert snapshot is not None and len(snapshot["cameras"]) == len(EXPECTED)  # type: ignore[arg-type]
            for kind, payload in [
                ("agent_state", presence),
                ("camera_meta", meta),
                ("camera_status", status_of(recorder, 2)),
                ("health_snapshot", snapshot),
            ]:
                assert_documented(kind, payload)
    finally:
        recorder.close()
    offline = Recorder(mosquitto.port)  # the retained presence says the agent left cleanly
    await eventually(
        lambda: (offline.get(topics.agent_state("gangnam")) or {}).get("state") == "offline", 5, "offline"
    )
    offline.close()
    wire = b"\n".join(recorder.raw)
    for spec in fleet.specs:
        assert spec.host.encode() not in wire, "a camera address left the agent"
        assert spec.password.encode() not in wire, "a camera password left the agent"
        assert quote(spec.password, safe="").encode() not in wire, "a URL-encoded password left the agent"


async def test_retained_state_is_restored_after_the_broker_loses_it(
    district: tuple[Fleet, Path], mosquitto: Mosquitto
) -> None:
    _, directory = district
    agent = Agent(agent_settings(directory, mosquitto))
    first = Recorder(mosquitto.port)
    async with running(agent):
        await eventually(lambda: status_of(first, 1) is not None, 20, "the first status")
        first.close()
        restart_broker_empty(mosquitto)
        late = Recorder(mosquitto.port)
        await eventually(lambda: status_of(late, 1) is not None, 20, "retained status after restart")
        await eventually(lambda: recorder_has_all_meta(late), 10, "retained meta after restart")
        assert (late.get(topics.agent_state("gangnam")) or {}).get("state") == "online"
        late.close()


async def test_a_camera_reporting_a_nan_frame_rate_does_not_stop_the_republish(
    district: tuple[Fleet, Path], mosquitto: Mosquitto
) -> None:
    _, directory = district
    agent = Agent(agent_settings(directory, mosquitto))
    first = Recorder(mosquitto.port)
    async with running(agent):
        await eventually(lambda: recorder_has_all_meta(first), 20, "every camera's meta")
        first.close()
        record = agent.registry.records["gangnam-00001"]  # its next answers say FrameRateLimit NaN
        assert record.info is not None
        nan = [dataclasses.replace(s, fps=float("nan")) for s in record.info.streams]
        record.info = dataclasses.replace(record.info, streams=nan)
        restart_broker_empty(mosquitto)
        late = Recorder(mosquitto.port)
        await eventually(lambda: recorder_has_all_meta(late), 20, "every camera's meta after restart")
        meta = late.get(topics.camera_meta("gangnam", "gangnam-00001")) or {}
        late.close()
    assert [s["fps"] for s in meta["streams"]] == [0, 0]  # type: ignore[index, union-attr]  # unknown


def restart_broker_empty(mosquitto: Mosquitto) -> None:
    """The broker dies and comes back empty (its database is gone): the agent must republish."""
    mosquitto.kill()
    shutil.rmtree(mosquitto.directory / "data", ignore_errors=True)
    for db in mosquitto.directory.rglob("*.db"):
        db.unlink()
    mosquitto.start(mosquitto.directory, mosquitto.port)


def recorder_has_all_meta(recorder: Recorder) -> bool:
    reachable = [
        n
        for n, (faults, _, _) in EXPECTED.items()
        if not faults or "image" in faults or "clock_skew_s" in faults
    ]
    return all(recorder.get(topics.camera_meta("gangnam", f"gangnam-{n:05d}")) is not None for n in reachable)


async def test_discovery_is_reconciled_with_the_ledger(
    district: tuple[Fleet, Path], mosquitto: Mosquitto
) -> None:
    fleet, directory = district
    # A camera that is not in the ledger answers discovery; a ledger camera that is off does not.
    extra = dataclasses.replace(
        fleet.specs[0], camera_id="gangnam-09999", host="127.51.0.14", faults=Faults()
    )
    stranger = WsDiscoveryResponder([extra], port=WSD_PORT)
    await stranger.start()
    try:
        agent = Agent(agent_settings(directory, mosquitto))
        await agent.sweep()
        outcome = await agent.discover()
    finally:
        await stranger.stop()
    assert outcome is not None
    summary = outcome.summary()
    assert "gangnam-00005" in summary["in_ledger_not_found"]  # offline
    assert "gangnam-00006" in summary["in_ledger_not_found"]  # hung: accepts nothing useful
    assert {m.camera_id for m in outcome.matched} >= {"gangnam-00001", "gangnam-00002", "gangnam-00003"}
    assert len(outcome.found_not_in_ledger) == 1
    stranger_address = outcome.found_not_in_ledger[0].address
    assert stranger_address in json.dumps(outcome.summary(include_addresses=True))
    addresses = {stranger_address} | {spec.host for spec in fleet.specs}
    leaked = [a for a in addresses if a in json.dumps(summary)]
    assert not leaked, "addresses stay out of the summary unless asked for"


def clip_request(request_id: str, seconds: float) -> ClipRequest:
    now = datetime.now(UTC)
    return signed(
        ClipRequest(
            district="gangnam",
            request_id=request_id,
            camera_id="gangnam-00001",
            start=now,
            end=now + timedelta(seconds=seconds),
            purpose="test",
            agency="police-112",
            priority="112",
            sent_at=now,
        )
    )


def clip_status(recorder: Recorder, request_id: str) -> object:
    return (recorder.get(topics.clip("gangnam", request_id)) or {}).get("status")


async def test_a_clip_request_during_shutdown_gets_a_failed_result(
    district: tuple[Fleet, Path], mosquitto: Mosquitto
) -> None:
    _, directory = district
    recorder = Recorder(mosquitto.port)
    agent = Agent(agent_settings(directory, mosquitto))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await eventually(lambda: status_of(recorder, 1) is not None, 20, "the first status")
        # A capture in flight keeps the agent in its shutdown grace period, connected, after SIGTERM.
        in_flight = clip_request("req-in-flight", 5)
        delivery = encode(in_flight)
        recorder.client.publish(delivery.topic, delivery.payload, qos=1)
        await eventually(lambda: clip_status(recorder, "req-in-flight") == "capturing", 10, "the capture")
        stop.set()  # what SIGTERM does
        await eventually(lambda: not agent.commands.accepting, 5, "the agent to stop taking commands")
        late = clip_request("req-shutdown-1", 5)
        delivery = encode(late)
        recorder.client.publish(delivery.topic, delivery.payload, qos=1)
        await eventually(lambda: clip_status(recorder, "req-shutdown-1") is not None, 10, "the refusal")
        result = recorder.get(topics.clip("gangnam", late.request_id))
        assert result is not None and result["status"] == "failed"
        assert "shutting down" in str(result["reason"])
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        recorder.close()


async def test_an_unexpected_error_in_a_round_does_not_stop_the_agent(
    district: tuple[Fleet, Path], mosquitto: Mosquitto
) -> None:
    _, directory = district
    recorder = Recorder(mosquitto.port)
    agent = Agent(agent_settings(directory, mosquitto))
    real_round = agent._liveness_round
    calls = 0

    async def failing_once(session: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in one round")
        await real_round(session)  # type: ignore[arg-type]

    agent._liveness_round = failing_once  # type: ignore[method-assign]
    try:
        async with running(agent) as task:
            await eventually(lambda: calls >= 3, 20, "liveness rounds after the failing one")
            assert not task.done()
            sample = agent.metrics.registry.get_sample_value
            assert sample("cctv_agent_errors_total", {"kind": "internal"}) == 1
    finally:
        recorder.close()
