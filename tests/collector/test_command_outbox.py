"""The command outbox against a real Mosquitto, with a subscriber playing the district agent and the real
ingest pipeline recording its answers, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.commands.outbox import OutboxPublisher, enqueue
from collector.commands.signing import CommandSigner
from collector.config import CollectorSettings
from collector.index.store import open_store
from collector.ingest.pipeline import Ingest
from collector.metrics import CollectorMetrics
from common.signing import load_public_key, signature_problem, signed_body
from contract import topics
from contract.codec import decode, encode
from contract.messages import AgentState, ArmRequest, ClipRequest, ClipUpdate
from tests.collector.conftest import wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

DISTRICT = "gangnam"


class DistrictAgent:
    """Subscribes to its district's commands (again after every reconnect), counts what it receives and
    answers with ClipUpdates, as an agent would."""

    def __init__(self, broker: Mosquitto) -> None:
        self.commands: dict[str, Any] = {}
        self.deliveries: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="agent-gangnam",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(topics.commands_filter(DISTRICT), qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "the agent did not subscribe"
        presence = encode(
            AgentState(district=DISTRICT, agent_id="agent-gangnam", state="online", session=1,
                       sent_at=datetime.now(UTC))
        )  # fmt: skip
        self.client.publish(presence.topic, presence.payload, qos=1, retain=True).wait_for_publish(5)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        command = decode(msg.topic, bytes(msg.payload))
        with self._lock:
            self.commands[command.request_id] = command  # type: ignore[union-attr]
            self.deliveries[command.request_id] += 1  # type: ignore[union-attr]

    def received(self, request_id: str) -> int:
        with self._lock:
            return self.deliveries[request_id]

    def answer(self, request_id: str, status: str = "accepted") -> None:
        update = ClipUpdate(
            district=DISTRICT, request_id=request_id, camera_id="cam-1", agent_id="agent-gangnam",
            status=status, sent_at=datetime.now(UTC),
        )  # fmt: skip
        d = encode(update)
        self.client.publish(d.topic, d.payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Platform:
    """What the platform does with the outbox: sign, enqueue in its transaction, notify after the commit."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.signer = CommandSigner(settings.command_key_file, settings.commands.ttl_s)
        self.store = open_store(settings.store.url)
        self.publishers: list[OutboxPublisher] = []
        self.ingests: list[Ingest] = []

    def publisher(self) -> OutboxPublisher:
        """A new publisher, as a (re)started collector has, on its own registry."""
        publisher = OutboxPublisher(self.settings, CollectorMetrics().registry, lambda: open_store(self.url))
        publisher.start()
        self.publishers.append(publisher)
        return publisher

    def ingest(self) -> None:
        ingest = Ingest(self.settings, CollectorMetrics())
        ingest.start()
        self.ingests.append(ingest)
        assert ingest.subscriber.subscribed.wait(10), "the collector did not subscribe"

    @property
    def url(self) -> str:
        return self.settings.store.url

    def request(
        self, request_id: str, *notified: OutboxPublisher, signer: CommandSigner | None = None
    ) -> ClipRequest:
        now = datetime.now(UTC)
        command = (signer or self.signer).sign(
            ClipRequest(
                district=DISTRICT, request_id=request_id, camera_id="cam-1",
                start=now - timedelta(seconds=30), end=now, purpose="missing child search",
                agency="police-112", incident="inc-7", service="vulnerable", sent_at=now,
            )
        )  # fmt: skip
        with self.store.transaction() as tx:
            enqueue(tx, command)
        for publisher in notified:
            publisher.notify()
        return command

    def answer_status(self, request_id: str) -> str | None:
        with self.store.transaction() as tx:
            rows = tx.query("SELECT answer_status FROM command_outbox WHERE request_id = ?", (request_id,))
        [(status,)] = rows
        return None if status is None else str(status)

    def close(self) -> None:
        for publisher in self.publishers:
            publisher.stop()
        for ingest in self.ingests:
            ingest.stop()
        self.store.close()


@pytest.fixture
def platform(mosquitto: Mosquitto, store_url: str, tmp_path: Path) -> Iterator[Callable[[float], Platform]]:
    made: list[Platform] = []

    def make(republish_interval_s: float) -> Platform:
        settings = CollectorSettings(
            collector_id="collector-test",
            mqtt={"port": mosquitto.port, "reconnect_max_s": 1},
            store={"url": store_url},
            ingest={"batch_ms": 20},
            commands={"key_file": tmp_path / "commands.key", "republish_interval_s": republish_interval_s},
        )
        open_store(store_url).migrate()
        made.append(Platform(settings))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def district_agent(mosquitto: Mosquitto) -> Iterator[DistrictAgent]:
    agent = DistrictAgent(mosquitto)
    yield agent
    agent.close()


def count(publisher: OutboxPublisher, name: str, kind: str | None = "clip") -> float:
    labels = {} if kind is None else {"kind": kind}
    return publisher.metrics.registry.get_sample_value(name, labels) or 0.0


def assert_no_more_republished(platform: Platform, agent: DistrictAgent, publisher: OutboxPublisher,
                               answered: list[str]) -> None:  # fmt: skip
    """After their answers are recorded, `answered` go out at most once more (a round that had picked them
    before the answer), while a fresh, unanswered command is republished over several rounds."""
    before = {r: agent.received(r) for r in answered}
    platform.request("sentinel", publisher)
    wait_until(lambda: agent.received("sentinel") >= 4, 10, "three republications of another command")
    for request_id in answered:
        assert agent.received(request_id) <= before[request_id] + 1, f"{request_id} republished after answer"


def test_a_committed_command_goes_out_at_once_when_notified(
    platform: Callable[[float], Platform], district_agent: DistrictAgent
) -> None:
    p = platform(60.0)  # the next round is a minute away: only notify() explains a prompt publication
    publisher = p.publisher()
    wait_until(publisher.connected, 5, "the outbox to connect")
    sent = p.request("req-1", publisher)
    wait_until(lambda: district_agent.received("req-1") == 1, 2, "the command to reach the agent")
    received = district_agent.commands["req-1"]
    assert received == sent
    trusted = {p.signer.key_id: load_public_key(p.signer.public_pem())}
    assert signature_problem(signed_body(received), received.signature, trusted) is None
    wait_until(
        lambda: count(publisher, "cctv_collector_commands_published_total") == 1, 2, "the PUBACK counted"
    )
    assert count(publisher, "cctv_collector_command_outbox_pending", kind=None) == 1


def test_a_command_is_republished_until_its_clip_update_is_ingested(
    platform: Callable[[float], Platform], district_agent: DistrictAgent
) -> None:
    p = platform(0.2)
    p.ingest()
    publisher = p.publisher()
    p.request("req-1", publisher)
    wait_until(lambda: district_agent.received("req-1") >= 3, 10, "the command republished twice")
    republished = "cctv_collector_commands_republished_total"
    wait_until(lambda: count(publisher, republished) >= 2, 5, "the republications counted")
    district_agent.answer("req-1", "accepted")
    wait_until(lambda: p.answer_status("req-1") == "accepted", 10, "the answer recorded in the outbox")
    assert_no_more_republished(p, district_agent, publisher, ["req-1"])


def test_the_outbox_survives_a_collector_restart_and_a_broker_outage(
    platform: Callable[[float], Platform], district_agent: DistrictAgent, mosquitto: Mosquitto
) -> None:
    p = platform(0.3)
    first = p.publisher()
    p.request("req-1", first)
    wait_until(lambda: district_agent.received("req-1") == 1, 5, "the first publication")
    mosquitto.stop()
    p.request("req-2", first)  # committed while the broker is down
    wait_until(lambda: not first.connected(), 5, "the outbox to see the broker gone")
    first.stop()  # the collector stops with both unanswered

    mosquitto.start(mosquitto.directory, mosquitto.port)
    second = p.publisher()  # the restarted collector: a new publisher on the same index
    p.ingest()
    wait_until(lambda: district_agent.received("req-1") >= 2, 10, "req-1 published again after the restart")
    wait_until(lambda: district_agent.received("req-2") >= 1, 10, "req-2 published once the broker is back")
    assert district_agent.commands["req-2"].request_id == "req-2"
    district_agent.answer("req-1", "accepted")
    district_agent.answer("req-2", "failed")
    wait_until(lambda: p.answer_status("req-1") == "accepted", 10, "req-1 answered")
    wait_until(lambda: p.answer_status("req-2") == "failed", 10, "req-2 answered")
    assert_no_more_republished(p, district_agent, second, ["req-1", "req-2"])


def test_an_expired_command_is_marked_and_never_published(
    platform: Callable[[float], Platform], district_agent: DistrictAgent
) -> None:
    p = platform(0.2)
    publisher = p.publisher()
    wait_until(publisher.connected, 5, "the outbox to connect")
    late = CommandSigner(p.settings.command_key_file, 600, clock=lambda: time.time() - 601)
    p.request("stale", publisher, signer=late)  # signed 601 s ago with a 600 s lifetime
    wait_until(lambda: p.answer_status("stale") == "expired", 5, "the command marked expired")
    wait_until(
        lambda: count(publisher, "cctv_collector_commands_expired_total") == 1, 5, "the expiry counted"
    )
    assert_no_more_republished(p, district_agent, publisher, ["stale"])
    assert district_agent.received("stale") == 0


def test_an_arm_command_is_done_once_the_broker_takes_it(
    platform: Callable[[float], Platform], district_agent: DistrictAgent
) -> None:
    p = platform(0.2)
    publisher = p.publisher()
    now = datetime.now(UTC)
    arm = p.signer.sign(
        ArmRequest(district=DISTRICT, request_id="arm-1", camera_id="cam-1", duration_s=600,
                   agency="police-112", incident="inc-7", service="112-video", sent_at=now)
    )  # fmt: skip
    with p.store.transaction() as tx:
        enqueue(tx, arm)
    publisher.notify()
    wait_until(lambda: p.answer_status("arm-1") == "published", 5, "the arm command acknowledged")
    assert district_agent.commands["arm-1"] == arm
    assert count(publisher, "cctv_collector_commands_published_total", kind="arm") == 1
    assert_no_more_republished(p, district_agent, publisher, ["arm-1"])
    assert district_agent.received("arm-1") == 1
