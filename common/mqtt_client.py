"""Building a paho-mqtt 2.x client (MQTT 5) from MqttSettings, the same way on both sides."""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.mqtt_settings import MqttSettings


def new_client(
    settings: MqttSettings, client_id: str, client_class: type[mqtt.Client] = mqtt.Client
) -> mqtt.Client:
    """An MQTT 5 client with credentials, TLS and capped reconnect backoff applied (not yet connected)."""
    client = client_class(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id or client_id,
        protocol=mqtt.MQTTv5,
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.use_tls:
        # PROTOCOL_TLS_CLIENT verifies the broker's certificate and host name.
        client.tls_set(
            ca_certs=_path(settings.ca_file),
            certfile=_path(settings.cert_file),
            keyfile=_path(settings.key_file),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(settings.reconnect_max_s)))
    return client


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def connect_persistent(
    client: mqtt.Client, settings: MqttSettings, session_expiry_s: int, receive_maximum: int | None = None
) -> None:
    """Connect in the background with a persistent MQTT 5 session: QoS 1 messages for this client wait at the
    broker while it is away (up to `session_expiry_s`). `receive_maximum` caps the QoS 1 messages the broker
    sends ahead of their acknowledgement (without it Mosquitto applies its `max_inflight_messages`)."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho ships no hints here
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    client.connect_async(
        settings.host, settings.port, keepalive=settings.keepalive_s, clean_start=False, properties=properties
    )
