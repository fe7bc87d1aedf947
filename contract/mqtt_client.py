"""Building a paho-mqtt 2.x client (MQTT 5) from MqttSettings, the same way on both sides."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contract.mqtt_settings import MqttSettings


def new_client(settings: MqttSettings, client_id: str) -> mqtt.Client:
    """An MQTT 5 client with credentials, TLS and capped reconnect backoff applied (not yet connected)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id or client_id,
        protocol=mqtt.MQTTv5,
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None, tls_version=ssl.PROTOCOL_TLS_CLIENT
        )
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(settings.reconnect_max_s)))
    return client
