"""Fault: a flood of malformed payloads on every topic the agent and the collector read, then a valid 112 clip
request. Both stay up, every malformed payload is counted by its reason on the side that read it, none is
logged with a traceback, and the 112 request is answered within 2 s of being sent.

The payloads come from tests/hostile_json.py (invalid JSON and UTF-8, wrong types at every field, `{"v": []}`,
deep nesting, numbers out of range, NaN, oversized, district and topic mismatches, unknown versions), cycled
to PER_TOPIC per topic; the few of several megabytes (oversized health) are sent once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from agent.app import Agent
from camsim.fleet import Fleet
from contract import topics
from contract.codec import decode, encode
from contract.errors import ContractError
from contract.messages import ClipRequest
from contract.schema import SCHEMAS
from tests.collector.conftest import start_collector_process
from tests.faults import flood_publisher
from tests.faults.flood_publisher import Flood
from tests.hostile_json import variants
from tests.integration.conftest import agent_settings, eventually, running
from tests.services import Mosquitto
from tests.signed_commands import signed

PER_TOPIC = 10_000
ANSWER_WITHIN_S = 2.0
GOLDEN = Path(__file__).parents[1] / "contract" / "golden"
AGENT_READS = ("clip_request", "arm_request")
COLLECTOR_READS = ("agent_state", "camera_meta", "camera_status", "health_snapshot", "clip_update")
_SMALL = 70_000  # bytes; larger payloads are sent once, not cycled


def flood(names: tuple[str, ...]) -> tuple[Flood, Counter[str]]:
    """PER_TOPIC malformed payloads on the topic of each golden example in `names`, and the rejection reasons
    the codec gives them (each payload is checked to be malformed)."""
    messages: list[tuple[str, bytes, str]] = []
    for name in names:
        example = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
        cases = variants(example["topic"], example["payload"], list(SCHEMAS[name].model_fields))
        bad = [(c.topic, c.payload, reason) for c in cases if (reason := _reason(c.topic, c.payload))]
        big = [m for m in bad if len(m[1]) > _SMALL]
        small = [m for m in bad if len(m[1]) <= _SMALL]
        messages += big + [small[n % len(small)] for n in range(PER_TOPIC - len(big))]
    return [(topic, payload) for topic, payload, _ in messages], Counter(reason for *_, reason in messages)


def _reason(topic: str, payload: bytes) -> str:
    """Why the codec rejects the payload; "" if it is valid."""
    try:
        decode(topic, payload)
    except ContractError as exc:
        return exc.reason
    return ""


def publish_all(port: int, messages: Flood, directory: Path) -> None:
    """Publish from another process (tests/faults/flood_publisher.py); return once the broker has them all."""
    path = directory / "flood.bin"
    flood_publisher.write(path, messages)
    subprocess.run([sys.executable, flood_publisher.__file__, str(path), str(port)], check=True, timeout=120)


class FirstAnswer:
    """When the first result of one clip request arrived (time.monotonic), and its status."""

    def __init__(self, port: int, request_id: str) -> None:
        self.first: tuple[float, str] | None = None
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"answers-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topics.clip("gangnam", request_id), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        if self.first is None:
            self.first = (time.monotonic(), json.loads(message.payload)["status"])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def collector_rejected(metrics_port: int) -> Counter[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cctv_collector_rejected_messages_total":
                counts[sample.labels["reason"]] = int(sample.value)
    return counts


def healthy(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/healthz", timeout=5) as resp:
            return bool(json.load(resp)["ok"])
    except OSError:
        return False


def agent_rejected(agent: Agent) -> Counter[str]:
    counts: Counter[str] = Counter()
    for metric in agent.metrics.commands_rejected.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["reason"]] = int(sample.value)
    return counts


def clip_outcomes(agent: Agent) -> Counter[str]:
    counts: Counter[str] = Counter()
    for metric in agent.clips.metrics.requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["outcome"]] = int(sample.value)
    return counts


async def counted(read: Callable[[], Counter[str]], expected: Counter[str], what: str) -> None:
    """Wait until `read()` equals `expected`; on a timeout, fail showing both."""
    with contextlib.suppress(AssertionError):
        await eventually(lambda: read() == expected, 60, what)
    assert read() == expected, what


def clip_request_112(request_id: str) -> ClipRequest:
    now = datetime.now(UTC)
    return signed(ClipRequest(district="gangnam", request_id=request_id, camera_id="gangnam-00001", start=now,
                              end=now + timedelta(seconds=2), purpose="assault in progress",
                              agency="police-112", priority="112", sent_at=now))  # fmt: skip


async def test_a_flood_of_malformed_payloads_is_counted_and_a_112_request_after_it_answered_within_2_s(
    district: tuple[Fleet, Path], mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, directory = district
    to_agent, agent_expected = flood(AGENT_READS)
    to_collector, collector_expected = flood(COLLECTOR_READS)
    log_path = tmp_path / "collector.log"
    with log_path.open("wb") as collector_log:
        proc, http_port, metrics_port = start_collector_process(
            tmp_path, mosquitto, stderr=collector_log.fileno()
        )
    request_id = f"req-112-{uuid.uuid4().hex[:8]}"
    answer = FirstAnswer(mosquitto.port, request_id)
    settings = agent_settings(directory, mosquitto)
    settings.health.stream_interval_s = 600  # no stream checks: decoding streams takes the CPU of the flood
    agent = Agent(settings)
    try:
        await eventually(lambda: healthy(http_port) and answer.subscribed.is_set(), 20, "the subscribers")
        with caplog.at_level(logging.INFO):
            async with running(agent) as task:
                target = agent.camera_target
                await eventually(
                    lambda: (t := target("gangnam-00001")) is not None and t.online, 30, "camera 1"
                )
                before = await asyncio.to_thread(collector_rejected, metrics_port)

                await asyncio.to_thread(publish_all, mosquitto.port, to_agent + to_collector, tmp_path)
                delivery = encode(clip_request_112(request_id))
                sent = time.monotonic()
                answer.client.publish(delivery.topic, delivery.payload, qos=1)

                await eventually(lambda: answer.first is not None, 30, "an answer to the 112 request")
                assert answer.first is not None
                arrived, status = answer.first
                # accepted, or a later step if the outbox sent only the newest update of the request
                assert status in ("accepted", "capturing", "uploading", "succeeded")
                assert arrived - sent <= ANSWER_WITHIN_S, f"answered after {arrived - sent:.1f} s"
                await counted(lambda: agent_rejected(agent), agent_expected, "the agent's rejections")
                rejected = lambda: collector_rejected(metrics_port) - before  # noqa: E731
                await counted(rejected, collector_expected, "the collector's rejections")
                assert not task.done() and agent.link.connected
                assert proc.poll() is None and healthy(http_port)
                assert clip_outcomes(agent) == {"accepted": 1}  # no answer to any malformed command
    finally:
        answer.client.loop_stop()
        answer.client.disconnect()
        proc.terminate()
        proc.wait(30)
    collector_lines = log_path.read_text(errors="replace").splitlines()
    assert not [line for line in collector_lines if "Traceback" in line]
    assert len([line for line in collector_lines if "dropped message" in line]) <= len(collector_expected)
    command_logs = [r for r in caplog.records if r.name in ("agent.commands", "agent.mqtt_link")]
    assert not [r for r in command_logs if r.exc_info]
    assert len([r for r in command_logs if r.name == "agent.commands"]) <= len(agent_expected)
