"""A paho-mqtt client that reads the broker's stream in large blocks and acknowledges in batches.

paho 2.x reads every MQTT packet with three or more `recv()` calls (command byte, each length byte, body),
runs one `select()` per packet, and wakes its own loop through a socket pair for every PUBACK it queues. At
tens of thousands of QoS 1 messages a second those system calls, not the messages, are most of the cost of
the network thread. This subclass keeps paho's protocol handling and changes only the plumbing:

- the socket is wrapped so that one `recv()` of up to `READ_SIZE` bytes serves many packets; the wrapper's
  `pending()` tells paho's loop that buffered bytes are waiting (the hook paho already uses for TLS);
- `loop_read` handles every packet already buffered before returning to `select()`;
- the PUBACKs of a burst skip the socket-pair wake-up and leave together in one `send()` at its end;
- inbound PUBLISH properties are decoded by a subclass of paho's Properties that shares its lookup tables and
  skips the work when a packet has none (paho rebuilds the tables for every message);
- with paho's manual acknowledgement on, the application says which message ids are done through `acks_due`,
  which the network thread polls each loop turn (paho's `ack()` from another thread could race a reconnect
  and acknowledge an id of the old connection on the new one); their PUBACKs leave in one packet.

It relies on paho internals (`_create_socket`, `_packet_queue`, `_packet_write`, `_out_packet`, `_sockpairW`),
so the dependency is pinned below the next minor release and tests/collector/test_buffered_client.py runs it
against a real broker.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt._packet
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

READ_SIZE = 256 * 1024
BURST = 4096  # packets handled per loop turn at most, so that writes and keepalive are never starved
LINGER_S = 1.0  # at most, at a deliberate disconnect
_PUBACK = 0x40


class PublishProperties(Properties):
    """MQTT 5 properties of an inbound PUBLISH, decoded as paho does, minus two costs paid per message: paho
    builds its lookup tables for every instance (these share one set), and clears all 27 attributes before
    unpacking even when the packet carries no property at all (the common case, handled up front)."""

    _template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's name
        for name in ("types", "names", "properties"):
            object.__setattr__(self, name, getattr(self._template, name))
        object.__setattr__(self, "packetType", packetType)

    def unpack(self, buffer: bytes) -> tuple[Properties, int]:
        if buffer[:1] == b"\x00":  # property length 0
            return self, 1
        return super().unpack(buffer)  # type: ignore[no-untyped-call, no-any-return]


class BufferedSocket:
    """The broker socket behind a read buffer; every other attribute is the socket's own."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(READ_SIZE)  # BlockingIOError when nothing is waiting, as before
            if not data:
                return b""  # the broker closed the connection
            self._buf, self._pos = data, 0
        end = self._pos + bufsize
        chunk = self._buf[self._pos : end]
        self._pos = min(end, len(self._buf))
        return chunk

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    """paho's Client with block reads and batched PUBACKs (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holding_acks = False
        # Counts connections: a message id means something only on the connection that delivered it.
        self.connection = 0
        # With manual_ack_set(True): the ids to acknowledge now on the given connection (network thread).
        self.acks_due: Callable[[int], list[int]] | None = None
        # Only decode_publish looks this name up: inbound PUBLISH properties, decoded the same, faster.
        paho.mqtt._packet.Properties = PublishProperties  # type: ignore[attr-defined]

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def reconnect(self) -> MQTTErrorCode:
        self.connection += 1  # paho drops what was queued for the old connection, acknowledgements included
        return super().reconnect()

    def wake(self) -> None:
        """Make the network thread poll `acks_due` now, not at its next packet or timeout (any thread)."""
        pair = self._sockpairW
        if pair is not None:
            with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is already pending
                pair.send(b"\0")

    def loop_misc(self) -> MQTTErrorCode:
        if self.acks_due is not None and self._sock is not None:
            mids = self.acks_due(self.connection)
            if mids:  # one packet of PUBACKs in the order received, written at the next loop turn
                joined = b"".join([struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids])
                self._out_packet.append(
                    {"command": _PUBACK, "mid": 0, "qos": 1, "pos": 0, "to_process": len(joined),
                     "packet": joined, "info": None}
                )  # fmt: skip
        return super().loop_misc()

    def _sock_close(self) -> None:
        """After our DISCONNECT, wait (briefly) for the broker to close its side before closing ours. A
        burst's acknowledgements travel just before the DISCONNECT; closing at once let Mosquitto drop some
        of them (measured: thousands redelivered to the resumed session; none with this wait)."""
        sock: Any = self._sock
        if sock is not None and self._state == _ConnectionState.MQTT_CS_DISCONNECTING:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + LINGER_S
                while (left := deadline - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
                    if not sock.recv(READ_SIZE):
                        break  # the broker closed: it has handled everything we sent
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._holding_acks = True
        try:
            for _ in range(BURST):
                rc = super().loop_read(max_packets)
                sock: Any = self._sock
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is None or not sock.pending():
                    break
        finally:
            self._holding_acks = False
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._out_packet and self._sock is not None:
            rc = self.loop_write()  # the burst's acknowledgements, in one send
        return rc

    def _packet_queue(
        self, command: int, packet: bytes | bytearray, mid: int, qos: int, info: Any = None
    ) -> MQTTErrorCode:
        if (command & 0xF0) == _PUBACK and self._holding_acks:
            # Queued while loop_read handles a burst: written once at its end, no wake-up, no send each.
            self._out_packet.append(
                {"command": command, "mid": mid, "qos": qos, "pos": 0, "to_process": len(packet),
                 "packet": packet, "info": info}
            )  # fmt: skip
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_queue(command, packet, mid, qos, info)

    def _packet_write(self) -> MQTTErrorCode:
        """Send all waiting PUBACKs first, as one packet: a DISCONNECT queued by another thread during a burst
        must not go out before the acknowledgements of what was already handled (the broker would deliver
        those messages again)."""
        queue = self._out_packet
        if len(queue) > 1 and queue[0]["pos"] == 0:  # never reorder around a packet half sent
            # Only this thread removes packets; others only append on the right, so popleft/appendleft on
            # the first `taken` packets is safe without a lock.
            taken = [queue.popleft() for _ in range(len(queue))]
            acks = [p["packet"] for p in taken if (p["command"] & 0xF0) == _PUBACK]
            for packet in reversed([p for p in taken if (p["command"] & 0xF0) != _PUBACK]):
                queue.appendleft(packet)
            if acks:
                joined = b"".join(acks)
                queue.appendleft(
                    {"command": _PUBACK, "mid": 0, "qos": 1, "pos": 0, "to_process": len(joined),
                     "packet": joined, "info": None}
                )  # fmt: skip
        return super()._packet_write()
