"""Command admission: malformed commands are counted by reason and dropped unanswered; valid ones go on."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.commands import Command, CommandAdmission
from agent.metrics import AgentMetrics
from contract.codec import Delivery, decode, encode
from contract.errors import ContractError
from contract.messages import ArmRequest, ClipRequest, LiveRequest
from contract.schema import SCHEMAS
from tests.hostile_json import Hostile, variants

GOLDEN = Path(__file__).parents[1] / "contract" / "golden"


class Rig:
    def __init__(self) -> None:
        self.metrics = AgentMetrics()
        self.handled: list[Command] = []
        self.published: list[Delivery] = []
        self.admission = CommandAdmission(
            district="gangnam",
            agent_id="gangnam-test",
            metrics=self.metrics,
            handle=self.handled.append,
            publish=lambda delivery, _kind: self.published.append(delivery),
        )

    async def receive(self, cases: list[tuple[str, bytes]]) -> None:
        """As paho does: on another thread. The loop has run every hand-over when this returns (they were
        queued before the thread's result)."""
        await asyncio.to_thread(lambda: [self.admission.receive(topic, payload) for topic, payload in cases])

    def rejected(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "cctv_agent_commands_rejected_total", {"reason": reason}
        )
        return value or 0.0


def hostile_commands() -> list[Hostile]:
    cases = []
    for name in ("clip_request", "arm_request", "live_request"):
        example = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
        cases += variants(example["topic"], example["payload"], list(SCHEMAS[name].model_fields))
    return cases


def clip_request() -> ClipRequest:
    now = datetime.now(UTC)
    return ClipRequest(district="gangnam", request_id="req-1", camera_id="gangnam-00001", start=now,
                       end=now + timedelta(seconds=5), purpose="test", agency="police-112", priority="112",
                       sent_at=now)  # fmt: skip


async def test_malformed_commands_are_counted_by_reason_and_dropped_unanswered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    rig.admission.start()
    cases = hostile_commands()
    expected, valid = Counter[str](), []
    for case in cases:
        try:
            valid.append(decode(case.topic, case.payload))
        except ContractError as exc:
            expected[exc.reason] += 1
    with caplog.at_level(logging.WARNING, logger="agent.commands"):
        await rig.receive([(c.topic, c.payload) for c in cases])
    assert sum(expected.values()) > 500  # a flood, most of it with readable request ids
    assert {reason: rig.rejected(reason) for reason in expected} == expected
    assert rig.published == []  # no answer for ids nobody validly asked for
    assert rig.handled == valid  # what validates goes on, in order
    assert len(caplog.records) == len(expected)  # one line per reason, not one per message


async def test_a_valid_request_during_shutdown_is_refused_and_a_malformed_one_still_dropped() -> None:
    rig = Rig()
    rig.admission.start()
    rig.admission.stop_accepting()
    request = clip_request()
    valid = encode(request)
    arm = encode(ArmRequest(district="gangnam", request_id="arm-1", camera_id="c-1", duration_s=60,
                            agency="fire-119", sent_at=request.sent_at))  # fmt: skip
    malformed = json.loads(valid.payload)
    malformed["end"] = malformed["start"]
    await rig.receive(
        [
            (valid.topic, json.dumps(malformed).encode()),
            (arm.topic, arm.payload),
            (valid.topic, valid.payload),
        ]
    )
    assert rig.handled == []
    assert [json.loads(d.payload)["request_id"] for d in rig.published] == [request.request_id]
    refusal = json.loads(rig.published[0].payload)
    assert refusal["status"] == "failed" and "shutting down" in refusal["reason"]
    assert rig.rejected("invalid_payload") == 1


async def test_a_live_command_during_shutdown_is_refused() -> None:
    rig = Rig()
    rig.admission.start()
    rig.admission.stop_accepting()
    now = datetime.now(UTC)
    live = encode(LiveRequest(
        district="gangnam", session_id="live-1", action="start", camera_id="gangnam-00001",
        until=now + timedelta(minutes=10), purpose="test", agency="police-112", sent_at=now,
    ))  # fmt: skip
    await rig.receive([(live.topic, live.payload)])
    assert rig.handled == []
    assert [d.topic for d in rig.published] == ["cctv/v1/gangnam/live/live-1"]
    refusal = json.loads(rig.published[0].payload)
    assert (refusal["status"], refusal["reason"]) == ("refused", "shutting_down")
