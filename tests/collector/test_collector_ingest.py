"""Ingest through a real Mosquitto: what agents publish ends up in the index, exactly once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import CollectorSettings
from collector.index.store import Store, open_store
from collector.ingest.pipeline import Ingest
from collector.metrics import CollectorMetrics
from contract import topics
from contract.codec import encode
from contract.messages import AnyMessage
from tests.collector.conftest import agent, clip, health, meta, status, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


@dataclass
class Running:
    ingest: Ingest
    metrics: CollectorMetrics

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite://{tmp_path / 'index.db'}"
    s = open_store(url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def start_collector(mosquitto: Mosquitto, db: Store) -> Iterator[Callable[..., Running]]:
    url = f"sqlite://{db.path}"  # type: ignore[attr-defined]
    running: list[Running] = []

    def start(collector_id: str = "collector-test", **ingest: object) -> Running:
        settings = CollectorSettings(
            collector_id=collector_id,
            mqtt={"port": mosquitto.port},
            store={"url": url},
            ingest={"batch_ms": 20, **ingest},
        )
        metrics = CollectorMetrics()
        r = Running(Ingest(settings, metrics), metrics)
        r.ingest.start()
        assert r.ingest.subscriber.subscribed.wait(10), "collector did not subscribe"
        running.append(r)
        return r

    yield start
    for r in running:
        if r.ingest.writer_alive():
            r.ingest.stop()


@pytest.fixture
def publish(mosquitto: Mosquitto) -> Iterator[Callable[..., None]]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-agent", protocol=mqtt.MQTTv5)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()

    def send(*messages: AnyMessage) -> None:
        for m in messages:
            d = encode(m)
            client.publish(d.topic, d.payload, qos=1, retain=d.retain).wait_for_publish(5)

    def raw(topic: str, payload: bytes) -> None:
        client.publish(topic, payload, qos=1).wait_for_publish(5)

    send.raw = raw  # type: ignore[attr-defined]
    yield send
    client.disconnect()
    client.loop_stop()


def test_meta_status_health_and_clip_are_indexed(start_collector, publish, db: Store) -> None:
    c = start_collector()
    publish(agent(), meta("cam-1"), meta("cam-2"), status("cam-1", "degraded", 1, ["low_fps"]))
    publish(health({"cam-2": "offline"}, 2))
    publish(clip("req-1", "succeeded", 3, camera_id="cam-1", object_key="clips/req-1.mp4"))
    wait_until(lambda: len(db.clips()) == 1 and db.health_counts("gangnam") != {}, what="clip and health")
    cams = {v.camera_id: v for v in db.cameras()}
    assert (cams["cam-1"].state, cams["cam-1"].reasons, cams["cam-1"].manufacturer) == (
        "degraded",
        ["low_fps"],
        "Hanwha",
    )
    assert cams["cam-2"].state == "offline"
    assert db.health_counts("gangnam") == {"offline": 1}
    assert db.clips()[0].object_key == "clips/req-1.mp4"
    wait_until(
        lambda: (
            c.count("cctv_collector_received_messages_total", kind="camera_meta") == 2
            and c.count("cctv_collector_received_messages_total", kind="health") == 1
        ),
        what="the counters",
    )


def test_duplicate_delivery_changes_nothing(start_collector, publish, db: Store) -> None:
    c = start_collector()
    publish(agent())
    for _ in range(3):
        publish(status("cam-1", "offline", 5), clip("req-1", "succeeded", 6, object_key="k"))
    wait_until(lambda: c.ingest.committed >= 7, what="all deliveries committed")
    assert [t.state for t in db.history("gangnam", 0, 2e9)] == ["offline"]
    assert [(r.request_id, r.status) for r in db.clips()] == [("req-1", "succeeded")]


def test_rejections_are_counted_by_reason_and_the_loop_survives(start_collector, publish, db: Store) -> None:
    c = start_collector()
    publish(agent())
    status_topic = topics.camera_status("gangnam", "cam-1")
    publish.raw(status_topic, b"{not json")
    body = json.loads(encode(status("cam-1", "online", 1)).payload)
    publish.raw(status_topic, json.dumps({**body, "v": 99}).encode())
    publish.raw(topics.camera_status("mapo", "cam-1"), json.dumps(body).encode())  # district mismatch
    publish(status("cam-9", "online", 1, agent_id="impostor"))  # not gangnam's agent
    publish(status("cam-8", "online", 1, district="mapo", agent_id="agent-mapo"))  # mapo never announced
    publish.raw(status_topic, b" " * (17 * 1024))
    publish(status("cam-1", "online", 2))
    wait_until(lambda: [v.camera_id for v in db.cameras()] == ["cam-1"], what="the valid status")
    expected = {
        "invalid_json": 1,
        "unknown_version": 1,
        "district_mismatch": 1,
        "unknown_agent": 2,
        "oversized": 1,
    }
    wait_until(
        lambda: all(
            c.count("cctv_collector_rejected_messages_total", reason=r) == n for r, n in expected.items()
        ),
        what=f"rejections {expected}",
    )


def test_a_restart_loses_nothing_published_meanwhile(start_collector, publish, db: Store) -> None:
    first = start_collector()
    publish(agent())
    wait_until(lambda: first.ingest.committed == 1, what="agent state")
    first.ingest.stop()
    publish(*(clip(f"req-{i}", "succeeded", i, object_key=f"clips/{i}.mp4") for i in range(300)))
    second = start_collector()  # same client id: the broker resumes the session and delivers the backlog
    wait_until(lambda: len(db.clips()) == 300, what="the 300 clips published while down")
    wait_until(
        lambda: second.count("cctv_collector_received_messages_total", kind="clip") == 300,
        what="the clip counter",
    )


def test_a_stop_acknowledges_everything_it_committed(mosquitto: Mosquitto, start_collector, publish) -> None:
    """Messages are acknowledged after their commit; a stop still acknowledges the last batches before it
    disconnects, or the broker would deliver them all again to the next run."""
    c = start_collector(batch_ms=10_000, batch_max=10_000)  # the writer holds everything until the stop
    publish(agent(), *(status(f"cam-{i}", "online", 1) for i in range(500)))
    wait_until(lambda: c.ingest.subscriber.acks.waiting() == 501, what="the 501 messages received")
    assert c.ingest.committed == 0
    c.ingest.stop()
    assert c.ingest.committed == 501
    assert _redelivered(mosquitto, "collector-test", publish) == []


def test_messages_received_before_a_broker_restart_are_acknowledged_on_the_new_connection(
    mosquitto: Mosquitto, start_collector, publish, db: Store
) -> None:
    """Ids of a lost connection are dropped; the broker delivers those messages again on the new one, where
    they are acknowledged after their commit: nothing is left unacknowledged and nothing is lost."""
    c = start_collector(batch_ms=2000, batch_max=10_000)  # the writer holds them across the restart
    publish(agent(), *(status(f"cam-{i}", "online", 1) for i in range(300)))
    wait_until(lambda: c.ingest.subscriber.acks.waiting() == 301, what="the 301 messages received")
    mosquitto.restart()
    wait_until(lambda: c.ingest.subscriber.client.connection >= 2, what="a new connection")
    wait_until(lambda: len(db.cameras()) == 300, what="300 cameras indexed")
    wait_until(lambda: c.ingest.subscriber.acks.waiting() == 0, what="every delivery acknowledged")
    c.ingest.stop()
    assert _redelivered(mosquitto, "collector-test", publish) == []


def _redelivered(broker: Mosquitto, client_id: str, publish: Callable[..., None]) -> list[str]:
    """What the broker still holds for a stopped collector's session: unacknowledged messages come before a
    live agent state published now."""
    got: list[str] = []
    resumed = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    resumed.on_message = lambda _c, _u, m: got.append(m.topic)
    resumed.connect(broker.host, broker.port, clean_start=False)
    resumed.loop_start()
    try:
        publish(agent(minutes=1))
        wait_until(lambda: topics.agent_state("gangnam") in got, what="the live agent state")
    finally:
        resumed.disconnect()
        resumed.loop_stop()
    return got[:-1]


def _at_least(c: Running, n: int) -> bool:
    return c.count("cctv_collector_received_messages_total", kind="camera_status") >= n


def test_shared_subscription_bootstraps_retained_state_and_splits_live_traffic(
    start_collector, publish, db: Store
) -> None:
    publish(agent(), *(status(f"cam-{i}", "online", 0) for i in range(50)))  # retained, before any collector
    a = start_collector("collector-a", share_group="city")
    b = start_collector("collector-b", share_group="city")
    # Mosquitto 2.0 also sends retained messages to a new shared subscription (the MQTT 5 spec says it must
    # not), so each collector may see them twice: idempotent upserts make that harmless.
    for c in (a, b):
        wait_until(partial(_at_least, c, 50), what="retained statuses delivered to each collector")
    wait_until(lambda: len(db.cameras()) == 50, what="50 cameras indexed")
    publish(*(clip(f"req-{i}", "accepted", i) for i in range(100)))
    wait_until(lambda: len(db.clips()) == 100, what="live clips")

    def received() -> list[float]:
        return [c.count("cctv_collector_received_messages_total", kind="clip") for c in (a, b)]

    # The counters follow the commit through each writer's report, a moment after the rows are visible.
    wait_until(lambda: sum(received()) >= 100, what="every clip counted")
    got = received()
    assert sum(got) == 100 and min(got) > 0, got
