"""The agent's one connection to the broker: retained presence with a last will, publishing, commands.

paho runs its network loop in its own thread; callbacks hand work to the asyncio loop and never raise.
On every (re)connect the agent publishes its presence and its retained camera state again, so a broker that
restarted without persistence is restored.

Presence sessions: the last will travels in CONNECT and paho resends the stored one on every reconnect, so
before each connection attempt (paho's `on_pre_connect`) the link starts a new session and sets the will for
it. The `online` presence of that connection carries the same session (`session`): the collector orders
presence by session, so a will always wins over the `online` of its own connection and loses to every later
connection. The broker publishes the will when the connection drops without a DISCONNECT, or 1.5 x
`keepalive_s` after the agent last sent anything (Mosquitto 2.0: up to 7 s later, it checks every 6 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from agent.metrics import AgentMetrics
from common.mqtt_client import connect_persistent, new_client
from common.mqtt_settings import MqttSettings
from contract.codec import Delivery

log = logging.getLogger(__name__)

# paho message ids are 16-bit: keep the window of unacknowledged QoS 1 messages well below 65,535.
MAX_INFLIGHT = 500
MAX_QUEUED = 20_000
COMMAND_SESSION_EXPIRY_S = 3600


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        will: Callable[[int], Delivery],
        metrics: AgentMetrics,
        on_connected: Callable[[], list[Delivery]],
        command_filter: str | None = None,
        on_command: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._on_connected = on_connected
        self._command_filter = command_filter
        self._on_command = on_command
        self._will = will
        self._session = 0
        self.refusal: str | None = (
            None  # why the broker refused the last connection attempt (bad password, ...)
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._client = new_client(settings, client_id)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.on_pre_connect = self._handle_pre_connect
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def status(self) -> str | None:
        """None while connected; else why not (the broker's refusal, if it gave one)."""
        if self.connected:
            return None
        return f"refused by the broker: {self.refusal}" if self.refusal else "not connected to the broker"

    @property
    def session(self) -> int:
        """The presence session of the current (or last attempted) connection; 0 before the first."""
        return self._session

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # A persistent session: clip commands sent while the agent is down wait at the broker (QoS 1).
        connect_persistent(self._client, self._settings, COMMAND_SESSION_EXPIRY_S)
        self._client.loop_start()

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def publish(self, delivery: Delivery, kind: str) -> bool:
        """Queue a message; False (and counted as dropped) if paho refused it (its queue is full), or if it is
        a QoS 0 message while disconnected (a health snapshot: the next one replaces it)."""
        if delivery.qos == 0 and not self.connected:
            self._metrics.dropped.labels(kind).inc()
            return False
        info = self._client.publish(
            delivery.topic, delivery.payload, qos=delivery.qos, retain=delivery.retain
        )
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._metrics.dropped.labels(kind).inc()
            return False
        self._metrics.published.labels(kind).inc()
        return True

    def publish_receipt(self, delivery: Delivery) -> mqtt.MQTTMessageInfo:
        """Queue a message whose acknowledgement the caller tracks (the clip outbox deletes only then)."""
        return self._client.publish(
            delivery.topic, delivery.payload, qos=delivery.qos, retain=delivery.retain
        )

    async def stop(self, final: Delivery | None, timeout_s: float = 3.0) -> None:
        """Publish `final` (the offline presence) if connected, then disconnect cleanly."""
        if final is not None and self.connected:
            info = self._client.publish(final.topic, final.payload, qos=final.qos, retain=final.retain)
            await asyncio.to_thread(info.wait_for_publish, timeout_s)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._metrics.mqtt_connected.set(0)

    # paho callbacks: run on paho's thread; they must never raise.

    def _handle_pre_connect(self, client: mqtt.Client, _u: Any) -> None:
        # Milliseconds since the epoch, so that a restarted agent starts above its previous run; strictly
        # increasing within a run, whatever the clock does.
        session = max(time.time_ns() // 1_000_000, self._session + 1)
        try:
            will = self._will(session)
        except Exception:  # keep the previous session and its will: they still match each other
            log.exception("could not build the last will")
            return
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._session = session

    def _handle_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            log.warning("broker refused connection: %s", reason)
            self.refusal = str(reason)
            return
        self.refusal = None
        log.info("connected to broker")
        self._metrics.mqtt_connected.set(1)
        if self._command_filter:
            client.subscribe(self._command_filter, qos=1)
        if self._loop is not None:
            # The registry belongs to the event loop: build the retained state there, not on paho's thread.
            self._loop.call_soon_threadsafe(self._republish)
        self._set_connected(True)

    def _republish(self) -> None:
        """After a (re)connect: presence and every camera's retained state (a broker may have lost them)."""
        try:
            deliveries = self._on_connected()
        except Exception:  # never let one bad record stop the rest of the agent
            log.exception("could not build the retained state to republish")
            return
        for delivery in deliveries:
            self._client.publish(delivery.topic, delivery.payload, qos=delivery.qos, retain=delivery.retain)

    def _handle_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        log.warning("disconnected from broker: %s", reason)
        self._metrics.mqtt_connected.set(0)
        self._set_connected(False)

    def _handle_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        # `on_command` runs on this thread, so it must be quick and thread-safe: admission rejects malformed
        # commands here, before any queue (agent/commands.py).
        if self._on_command is None:
            return
        try:
            self._on_command(message.topic, bytes(message.payload))
        except Exception:  # a bug; the command is lost, the link is not
            log.exception("could not take a command")

    def _set_connected(self, value: bool) -> None:
        if self._loop is None:
            return
        action = self._connected.set if value else self._connected.clear
        self._loop.call_soon_threadsafe(action)
