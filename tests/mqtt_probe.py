"""A paho client built as the agent and collector build theirs (common.mqtt_client), that keeps every broker
answer: CONNACK, SUBACK and PUBACK reason codes, and the messages it received. For broker security tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from common.mqtt_client import new_client
from common.mqtt_settings import MqttSettings

TIMEOUT_S = 5.0


class Probe:
    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.settings = settings
        self.client = new_client(settings, client_id)
        self.client.reconnect_delay_set(60, 60)  # a refused client is not retried within a test
        self._lock = threading.Lock()
        self._answers: dict[str, Any] = {}
        self._changed = threading.Condition(self._lock)
        self.received: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def connect(self) -> int:
        """The CONNACK reason code (0 accepted; 134 bad user name or password, 135 not authorized)."""
        self.client.connect(self.settings.host, self.settings.port, keepalive=10)
        self.client.loop_start()
        return int(self._wait("connack"))

    def subscribe(self, topic_filter: str) -> int:
        """The SUBACK reason code: the granted QoS (0, 1), or 135 not authorized."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        return int(self._wait(f"suback-{mid}")[0])

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 success, 135 not authorized; Mosquitto 2.0
        answers a refused publish with 0 as well: only non-delivery proves a refusal)."""
        info = self.client.publish(topic, payload, qos=1)
        return int(self._wait(f"puback-{info.mid}"))

    def wait_for(self, topic: str, payload: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        with self._changed:
            while (topic, payload) not in self.received:
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"{topic} {payload!r} never arrived; got {self.received}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _wait(self, key: str) -> Any:
        deadline = time.monotonic() + TIMEOUT_S
        with self._changed:
            while key not in self._answers:
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"no {key} from the broker within {TIMEOUT_S} s")
            return self._answers.pop(key)

    def _answer(self, key: str, value: Any) -> None:
        with self._changed:
            self._answers[key] = value
            self._changed.notify_all()

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._answer("connack", reason.value)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, reasons: list[Any], _p: Any) -> None:
        self._answer(f"suback-{mid}", [r.value for r in reasons])

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self._answer(f"puback-{mid}", reason.value)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append((message.topic, bytes(message.payload)))
            self._changed.notify_all()
