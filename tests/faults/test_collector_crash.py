"""A collector killed while it drains a backlog loses nothing it acknowledged: the broker keeps every message
that was not acknowledged, and a message is acknowledged only once committed to the index."""

from __future__ import annotations

import contextlib
import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.index.store import Store, open_store
from contract.codec import encode
from contract.messages import AnyMessage
from tests.collector.conftest import agent, status
from tests.faults.conftest import start_collector_process, wait_until
from tests.services import Mosquitto

BACKLOG = 50_000
Health = dict[str, Any]
STATES = ("online", "degraded", "offline")


def test_a_killed_collector_loses_no_acknowledged_message(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # A first run creates the collector's persistent session and learns the district's agent.
    with _collector(tmp_path, mosquitto) as health:
        wait_until(lambda: health().get("mqtt_subscribed") is True, what="the collector subscribed")
        _publish(mosquitto, [agent()])
        wait_until(lambda: health().get("committed_messages") == 1, what="the agent state committed")
    expected = {f"cam-{i:05d}": STATES[i % 3] for i in range(BACKLOG)}
    _publish(mosquitto, [status(cam, state, 5) for cam, state in expected.items()])  # queued for the session

    with _collector(tmp_path, mosquitto, kill=True) as health:
        wait_until(
            lambda: health().get("committed_messages", 0) >= BACKLOG * 0.3, 30, "a third of the backlog"
        )
    # SIGKILLed mid-drain: its committed share is indexed, thousands were read but not yet committed.
    index = open_store(f"sqlite://{tmp_path / 'run.db'}")
    try:
        assert _indexed(index) < BACKLOG

        with _collector(tmp_path, mosquitto) as health:
            wait_until(lambda: _indexed(index) >= BACKLOG, 60, f"all {BACKLOG} cameras indexed")
            wait_until(lambda: health().get("unacknowledged_messages") == 0, what="everything acknowledged")
        assert {c.camera_id: c.state for c in index.cameras("gangnam")} == expected
    finally:
        index.close()


@contextlib.contextmanager
def _collector(tmp_path: Path, broker: Mosquitto, kill: bool = False) -> Iterator[Callable[[], Health]]:
    """`cctv-collector run` until the block ends, then SIGTERM (it must exit 0) or, with `kill`, SIGKILL."""
    proc, http_port, _metrics_port = start_collector_process(tmp_path, broker)
    try:
        yield partial(_health, f"http://127.0.0.1:{http_port}/v1/healthz")
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        assert proc.wait(30) == (-signal.SIGKILL if kill else 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _health(url: str) -> Health:
    """The /healthz body, also when it answers 503; empty while the API is not up."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - http://127.0.0.1 only
            body: Health = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    except OSError:
        body = {}
    return body


def _indexed(index: Store) -> int:
    return sum(index.camera_counts().values())


def _publish(broker: Mosquitto, messages: list[AnyMessage]) -> None:
    """Publish at QoS 1 and wait until the broker has taken each (at most 5,000 unconfirmed: paho's ids)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = []
        for i, message in enumerate(messages, 1):
            d = encode(message)
            infos.append(client.publish(d.topic, d.payload, qos=1, retain=d.retain))
            if i % 5000 == 0 or i == len(messages):
                for info in infos:
                    info.wait_for_publish(30)
                    assert info.is_published()
                infos = []
    finally:
        client.disconnect()
        client.loop_stop()
