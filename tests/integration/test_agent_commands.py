"""The district keeps control, against a real agent: real Mosquitto, a camsim camera, the Ceph S3 gateway.

A command the district does not serve (forged, unknown key, expired, unsigned, another agency or service, a
window too long) gets `failed` with its reason and leaves nothing in S3; one for another district is dropped
by the codec; a valid one is captured once however often it is replayed, and lands in the provision ledger
that `cctv-agent ledger export` writes as CSV.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.config import AgentSettings
from contract import topics
from contract.codec import encode
from contract.messages import ArmRequest, ClipRequest
from tests.integration.conftest import (
    Recorder,
    camera_fixture,
    clip_agent_settings,
    eventually,
    running,
)
from tests.services import CephS3, Mosquitto
from tests.signed_commands import OTHER_KEY, collector_key_file, signed

pytestmark = pytest.mark.integration

CAMERA_ID = "gangnam-00001"


camera = camera_fixture("127.41.0.1")


def clip_request(seconds: float = 2.0, **fields: Any) -> ClipRequest:
    now = datetime.now(UTC)
    values = {"district": "gangnam", "request_id": f"req-{uuid.uuid4().hex[:12]}", "camera_id": CAMERA_ID,
              "start": now + timedelta(seconds=1), "end": now + timedelta(seconds=1 + seconds),
              "purpose": "assault in progress", "agency": "police-112", "incident": "112-20261205-0007",
              "requested_by": "operator-17", "priority": "112", "sent_at": now,
              "service": "112-video"}  # fmt: skip
    return ClipRequest.model_validate(values | fields)


class Agency:
    """The collector's side of the wire: publishes commands and reads the agent's answers."""

    def __init__(self, broker: Mosquitto) -> None:
        self.recorder = Recorder(broker.port)

    def send(self, command: ClipRequest | ArmRequest, topic: str | None = None) -> None:
        delivery = encode(command)
        self.recorder.client.publish(topic or delivery.topic, delivery.payload, qos=1)

    def answer(self, request_id: str) -> dict[str, object]:
        return self.recorder.get(topics.clip("gangnam", request_id)) or {}

    async def final(self, request_id: str, timeout_s: float = 30) -> dict[str, object]:
        final = ("succeeded", "failed")
        await eventually(lambda: self.answer(request_id).get("status") in final, timeout_s, request_id)
        return self.answer(request_id)


def sample(agent: Agent, name: str, **labels: str) -> float:
    return agent.metrics.registry.get_sample_value(name, labels) or 0.0


async def camera_online(agent: Agent) -> None:
    await eventually(lambda: (t := agent.camera_target(CAMERA_ID)) is not None and t.online, 20, "camera")


async def test_the_agent_captures_only_what_the_district_serves_and_records_what_it_handed_over(
    camera: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    settings = clip_agent_settings(
        camera, mosquitto, ceph_s3, bucket, "gangnam-commands",
        collector_public_keys=[collector_key_file(camera)], agencies=["police-112"],
        services=["112-video", "112-dispatch"], max_window_s=30,
    )  # fmt: skip
    agent, agency = Agent(settings), Agency(mosquitto)
    forged = signed(clip_request()).model_copy(update={"purpose": "something else"})
    refused = {
        "signature_invalid": forged,
        "unknown_key": signed(clip_request(), OTHER_KEY),
        "command_expired": signed(clip_request(), ttl_s=-120),  # beyond the 30 s clock leeway
        "signature_missing": clip_request(expires_at=datetime.now(UTC) + timedelta(seconds=60)),
        "agency_not_served": signed(clip_request(agency="private-security")),
        "service_not_served": signed(clip_request(service="119-dispatch")),
        "window_too_long": signed(clip_request(seconds=31)),
    }
    other_district = signed(clip_request(district="mapo"))
    arm = ArmRequest(district="gangnam", request_id="arm-forged", camera_id=CAMERA_ID, duration_s=600,
                     agency="police-112", sent_at=datetime.now(UTC))  # fmt: skip
    forged_arm = signed(arm)
    forged_arm = forged_arm.model_copy(update={"duration_s": 3600})
    try:
        async with running(agent, timeout_s=60):
            await camera_online(agent)
            for command in refused.values():
                agency.send(command)
            agency.send(
                other_district, topics.command("gangnam", "clip")
            )  # a mapo command on gangnam's topic
            agency.send(forged_arm)
            answers = {reason: await agency.final(c.request_id) for reason, c in refused.items()}
            await eventually(
                lambda: sample(agent, "cctv_agent_commands_rejected_total", reason="district_mismatch") == 1,
                10, "the other district's command dropped",
            )  # fmt: skip
            await eventually(
                lambda: sample(agent, "cctv_agent_commands_refused_total", reason="signature_invalid") == 2,
                10, "the forged arm refused",
            )  # fmt: skip

            valid = signed(clip_request())
            agency.send(valid)
            result = await agency.final(valid.request_id)
            agency.send(valid)  # replayed by someone who recorded it
            await eventually(
                lambda: sample(agent, "cctv_agent_clip_requests_total", outcome="duplicate") == 1,
                10,
                "replay",
            )
    finally:
        agency.recorder.close()

    assert {reason: (a["status"], a["reason"]) for reason, a in answers.items()} == {
        reason: ("failed", reason) for reason in refused
    }
    assert {r: sample(agent, "cctv_agent_commands_refused_total", reason=r) for r in refused} == {
        r: (2.0 if r == "signature_invalid" else 1.0) for r in refused
    }
    assert agency.answer(other_district.request_id) == {}  # no answer on gangnam's topic for a mapo id
    assert result["status"] == "succeeded" and result["source"] == "live", result
    listed = client.list_objects_v2(Bucket=bucket, Prefix="gangnam/").get("Contents", [])
    assert [o["Key"] for o in listed if o["Key"].endswith(".mp4")] == [result["object_key"]]  # one clip only

    rows = export_ledger(camera, settings)
    assert [(r["request_id"], r["agency"], r["requested_by"], r["service"], r["incident"], r["purpose"],
             r["camera_id"], r["object_key"], r["sha256"]) for r in rows] == [
        (valid.request_id, "police-112", "operator-17", "112-video", "112-20261205-0007",
         "assault in progress", CAMERA_ID, result["object_key"], result["sha256"])
    ]  # fmt: skip
    assert datetime.fromisoformat(rows[0]["window_start"]) == valid.start
    assert (
        export_ledger(camera, settings, "--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    )


def export_ledger(directory: Path, settings: AgentSettings, *args: str) -> list[dict[str, str]]:
    """`cctv-agent ledger export` in its own process, as a district officer runs it; the CSV's rows."""
    config = directory / "agent.toml"
    lines = ['district = "gangnam"', f'agent_id = "{settings.agent_id}"', f'ledger = "{settings.ledger}"',
             "[clips]", f'spool_dir = "{settings.clips.spool_dir}"']  # fmt: skip
    config.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "agent.cli", "ledger", "export", "--config", str(config), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False, env=os.environ)
    assert done.returncode == 0, done.stderr
    return list(csv.DictReader(io.StringIO(done.stdout)))


async def test_allow_unsigned_serves_an_unsigned_request_and_says_so_loudly(
    camera: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    settings = clip_agent_settings(
        camera, mosquitto, ceph_s3, s3_bucket[1], "gangnam-commands", allow_unsigned=True
    )
    agent, agency = Agent(settings), Agency(mosquitto)
    try:
        with caplog.at_level(logging.WARNING, logger="agent.command_policy"):
            async with running(agent, timeout_s=60):
                await camera_online(agent)
                request = clip_request(seconds=1.0)
                agency.send(request)
                result = await agency.final(request.request_id)
    finally:
        agency.recorder.close()
    assert result["status"] == "succeeded", result
    assert [r.message for r in caplog.records if "allow_unsigned is ON" in r.message]
