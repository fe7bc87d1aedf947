"""The collector's BufferedClient against a real Mosquitto: it must receive exactly what plain paho receives,
and acknowledge everything it received (or the broker would deliver it again to the resumed session)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.ingest.buffered_client import READ_SIZE, BufferedClient
from common.mqtt_client import new_client
from common.mqtt_settings import MqttSettings
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

Received = tuple[str, bytes, int, dict[str, Any]]


def _client(cls: type[mqtt.Client], client_id: str = "") -> mqtt.Client:
    return cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def _session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    return props


def _open_session(broker: Mosquitto, client_id: str) -> None:
    """Subscribe with a persistent session and leave, so that the broker queues messages for it."""
    client = _client(mqtt.Client, client_id)
    acked = threading.Event()
    client.on_subscribe = lambda *_: acked.set()
    client.connect(broker.host, broker.port, clean_start=True, properties=_session_props())
    client.loop_start()
    client.subscribe("t/#", qos=1)
    assert acked.wait(10)
    client.disconnect()
    client.loop_stop()


def _publish(broker: Mosquitto, messages: list[tuple[str, bytes, int, Properties | None]]) -> None:
    client = _client(mqtt.Client)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(t, p, qos=q, properties=props) for t, p, q, props in messages]
    for info in infos:
        info.wait_for_publish(20)
    client.disconnect()
    client.loop_stop()


class Receiver:
    """Resumes a session and collects messages until one arrives on topic `until`."""

    def __init__(self, broker: Mosquitto, cls: type[mqtt.Client], client_id: str, until: str) -> None:
        self.got: list[Received] = []
        self.until = until
        self.done = threading.Event()
        self.client = _client(cls, client_id)
        self.client.on_message = self._on_message
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect(broker.host, broker.port, clean_start=False, properties=_session_props())
        self.client.loop_start()
        assert connected.wait(10)

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        props = m.properties.json() if m.properties is not None else {}
        self.got.append((m.topic, bytes(m.payload), m.qos, props))
        if m.topic == self.until:
            self.done.set()

    def wait(self) -> list[Received]:
        try:
            assert self.done.wait(30), f"never received {self.until}"
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        return self.got


def _with_properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.UserProperty = [("agent", "agent-gangnam"), ("trace", "7f")]
    props.CorrelationData = b"\x00\x01"
    return props


def test_receives_exactly_what_plain_paho_receives(mosquitto: Mosquitto) -> None:
    _open_session(mosquitto, "plain")
    _open_session(mosquitto, "buffered")
    messages: list[tuple[str, bytes, int, Properties | None]] = []
    for i in range(3000):
        props = _with_properties() if i % 97 == 0 else None
        messages.append((f"t/cam-{i % 300}/status", f'{{"n": {i}}}'.encode() * (1 + i % 5), i % 2, props))
    messages.insert(1500, ("t/big", bytes(range(256)) * (3 * READ_SIZE // 256 + 7), 1, None))  # spans reads
    messages.append(("t/end", b"", 1, None))
    receivers = [
        Receiver(mosquitto, cls, cid, "t/end")
        for cls, cid in ((mqtt.Client, "plain"), (BufferedClient, "buffered"))
    ]
    _publish(mosquitto, messages)  # live, so that QoS 0 messages are delivered too
    plain, buffered = (r.wait() for r in receivers)
    assert len(plain) == len(messages)
    assert buffered == plain
    with_props = [props for *_, props in buffered if props]
    assert len(with_props) == 31  # every 97th message
    assert with_props[0]["UserProperty"] == [("agent", "agent-gangnam"), ("trace", "7f")]


def test_everything_received_is_acknowledged(mosquitto: Mosquitto) -> None:
    _open_session(mosquitto, "buffered")
    _publish(mosquitto, [(f"t/{i}", b"x" * 200, 1, None) for i in range(5000)] + [("t/end", b"", 1, None)])
    first = Receiver(mosquitto, BufferedClient, "buffered", "t/end").wait()
    assert len(first) == 5001
    # Unacknowledged QoS 1 messages would be delivered again to the resumed session before the marker.
    resumed = Receiver(mosquitto, mqtt.Client, "buffered", "t/marker")
    _publish(mosquitto, [("t/marker", b"", 1, None)])
    again = resumed.wait()
    assert [topic for topic, *_ in again] == ["t/marker"]


def test_over_tls_with_the_collectors_settings(tmp_path: Path) -> None:
    """The collector's client as configured for a TLS broker (mqtt.tls, mqtt.ca_file): the buffered reads sit
    on top of the TLS socket and still see every byte, a message larger than one read included."""
    with Mosquitto().start(tmp_path / "tls-broker", tls=True) as broker:
        settings = MqttSettings(host=broker.host, port=broker.tls_port, tls=True, ca_file=broker.ca_file)
        client = new_client(settings, "tls-collector", BufferedClient)
        got: list[tuple[str, bytes]] = []
        done, subscribed = threading.Event(), threading.Event()

        def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
            got.append((m.topic, bytes(m.payload)))
            if m.topic == "t/end":
                done.set()

        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_connect = lambda c, *_: c.subscribe("t/#", qos=1)
        client.connect(broker.host, broker.tls_port)
        client.loop_start()
        try:
            assert subscribed.wait(10)
            sent = [(f"t/{i}", f"payload {i}".encode() * 20) for i in range(2000)]
            sent.insert(1000, ("t/big", b"\x07" * (2 * READ_SIZE + 3)))
            sent.append(("t/end", b""))
            publisher = new_client(settings, "tls-publisher")
            publisher.connect(broker.host, broker.tls_port)
            publisher.loop_start()
            for info in [publisher.publish(t, p, qos=1) for t, p in sent]:
                info.wait_for_publish(20)
            publisher.disconnect()
            publisher.loop_stop()
            assert done.wait(30)
        finally:
            client.disconnect()
            client.loop_stop()
    assert got == sent


def test_manual_acks_acknowledge_exactly_what_acks_due_returns(mosquitto: Mosquitto) -> None:
    """With manual acknowledgement, what the application does not declare done stays at the broker and is
    delivered again to the resumed session; what it declares done is not."""
    _open_session(mosquitto, "manual")
    _publish(mosquitto, [(f"t/{i}", b"x" * 200, 1, None) for i in range(3000)])
    client = _client(BufferedClient, "manual")
    assert isinstance(client, BufferedClient)
    client.manual_ack_set(True)
    mids: dict[str, int] = {}
    all_in, acked = threading.Event(), threading.Event()

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        mids[m.topic] = m.mid
        if len(mids) == 3000:
            all_in.set()

    def acks_due(connection: int) -> list[int]:
        if not all_in.is_set() or acked.is_set():
            return []
        assert connection == client.connection == 1
        acked.set()
        return [mids[f"t/{i}"] for i in range(3000) if i % 3]  # every third message is not done

    client.on_message = on_message
    client.acks_due = acks_due
    client.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=_session_props())
    client.loop_start()
    try:
        assert all_in.wait(30)
        client.wake()
        assert acked.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    resumed = Receiver(mosquitto, mqtt.Client, "manual", "t/marker")
    _publish(mosquitto, [("t/marker", b"", 1, None)])
    again = [topic for topic, *_ in resumed.wait()]
    assert again == [f"t/{i}" for i in range(0, 3000, 3)] + ["t/marker"]
