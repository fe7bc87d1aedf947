"""The follower of live updates on a real Mosquitto: a segment the agent announces is listed within tens of
milliseconds (not after the ingest writer's batching), bad updates are counted by reason and dropped without
stopping it, and an update published while the collector is away is listed when it is back (QoS 1, its own
persistent session)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from collector.config import CollectorSettings, StoreSettings
from collector.index import live as db
from collector.index.store import open_store
from collector.live.follower import LiveFollower
from collector.live.metrics import LiveMetrics
from collector.metrics import CollectorMetrics
from common.mqtt_settings import MqttSettings
from contract import topics
from contract.codec import encode
from tests.collector.platform_harness import Harness, harness
from tests.collector.test_live_sessions import update
from tests.collector.test_platform_live import started
from tests.services import Mosquitto

COLLECTOR_SHARE_S = 0.1  # announcement published -> listed: the collector's part of the 0.5 s budget


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path, f"sqlite://{tmp_path / 'index.db'}") as built:
        yield built


@pytest.fixture
def agent_client(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="agent-gangnam", protocol=mqtt.MQTTv5)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def follow(
    tmp_path: Path, mosquitto: Mosquitto
) -> Iterator[Callable[[], tuple[LiveFollower, CollectorRegistry]]]:
    url = f"sqlite://{tmp_path / 'index.db'}"
    settings = CollectorSettings(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port), store=StoreSettings(url=url)
    )
    running: list[LiveFollower] = []

    def start() -> tuple[LiveFollower, CollectorRegistry]:
        registry = CollectorRegistry()
        follower = LiveFollower(
            settings, CollectorMetrics(registry), LiveMetrics(registry), lambda: open_store(url), time.time
        )
        follower.start()
        assert follower.subscribed.wait(10)
        running.append(follower)
        return follower, registry

    yield start
    for follower in running:
        follower.stop()


def listed(h: Harness, session: dict[str, Any]) -> list[db.SegmentRow]:
    with h.store.reading() as tx:
        return db.window(tx, session["session_id"], 100)


async def until_listed(
    h: Harness, session: dict[str, Any], count: int, timeout_s: float = 5.0
) -> list[db.SegmentRow]:
    deadline = time.monotonic() + timeout_s
    while len(rows := listed(h, session)) < count:
        assert time.monotonic() < deadline, f"{len(rows)} of {count} segments listed"
        await asyncio.sleep(0.005)
    return rows


async def test_segments_are_listed_within_milliseconds_and_bad_updates_are_counted(
    h: Harness, follow: Callable[[], tuple[LiveFollower, CollectorRegistry]], agent_client: mqtt.Client
) -> None:
    session = await started(h)
    _, registry = follow()
    published = []
    agent_client.publish(topics.live("gangnam", session["session_id"]), b"{not json", qos=1).wait_for_publish(
        5
    )
    unknown = update({**session, "session_id": "live-unknown"}, 0)
    agent_client.publish(*_wire(unknown), qos=1).wait_for_publish(5)
    for n in range(10):
        published.append(time.time())
        agent_client.publish(*_wire(update(session, n)), qos=1).wait_for_publish(5)
        await until_listed(h, session, n + 1)
    rows = listed(h, session)
    delays = sorted(row.listed_at - at for row, at in zip(rows, published, strict=True))
    assert delays[-1] < COLLECTOR_SHARE_S, delays
    rejected = "cctv_collector_rejected_messages_total"
    assert registry.get_sample_value(rejected, {"reason": "invalid_json"}) == 1
    assert registry.get_sample_value(rejected, {"reason": "unknown_session"}) == 1
    assert registry.get_sample_value("cctv_collector_live_segment_listing_seconds_count") == 10
    assert registry.get_sample_value("cctv_collector_live_first_segment_seconds_count") == 1


async def test_an_update_sent_while_the_collector_is_away_is_listed_when_it_is_back(
    h: Harness, follow: Callable[[], tuple[LiveFollower, CollectorRegistry]], agent_client: mqtt.Client
) -> None:
    session = await started(h)
    first, _ = follow()
    agent_client.publish(*_wire(update(session, 0)), qos=1).wait_for_publish(5)
    await until_listed(h, session, 1)
    first.stop()
    agent_client.publish(*_wire(update(session, 1)), qos=1).wait_for_publish(5)
    follow()
    assert [s.sequence for s in await until_listed(h, session, 2)] == [0, 1]


def _wire(message: Any) -> tuple[str, bytes]:
    delivery = encode(message)
    return delivery.topic, delivery.payload
