"""Publishes a flood at QoS 1 from its own process, so that it does not share a GIL with the agent under test.

    python tests/faults/flood_publisher.py FILE PORT

FILE holds the messages as (4-byte topic length, topic, 4-byte payload length, payload), big-endian. Exits 0
once the broker on 127.0.0.1:PORT has acknowledged every message. Not a test module; needs only paho-mqtt.
"""

from __future__ import annotations

import struct
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

Flood = list[tuple[str, bytes]]
# paho's message ids are 16-bit: the unacknowledged messages must stay well below 65,535.
WINDOW = 20_000


def write(path: Path, messages: Flood) -> None:
    with path.open("wb") as out:
        for topic, payload in messages:
            name = topic.encode()
            out.write(struct.pack(">I", len(name)) + name + struct.pack(">I", len(payload)) + payload)


def read(path: Path) -> Iterator[tuple[str, bytes]]:
    data, at = path.read_bytes(), 0
    while at < len(data):
        (size,), at = struct.unpack_from(">I", data, at), at + 4
        topic, at = data[at : at + size].decode(), at + size
        (size,), at = struct.unpack_from(">I", data, at), at + 4
        yield topic, data[at : at + size]
        at += size


def publish(port: int, messages: Iterator[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        window: deque[mqtt.MQTTMessageInfo] = deque()
        for topic, payload in messages:
            window.append(client.publish(topic, payload, qos=1))
            if len(window) == WINDOW:
                window.popleft().wait_for_publish(60)
        for info in window:
            info.wait_for_publish(60)
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    publish(int(sys.argv[2]), read(Path(sys.argv[1])))
