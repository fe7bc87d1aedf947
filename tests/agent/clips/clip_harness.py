"""Test helpers for the clip service: a fake capture pool, MQTT plumbing and request builders.

Not a test module (no `test_` prefix); imported by test_service.py, test_spool.py and service_driver.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.clips.capture import CaptureResult
from agent.clips.pipeline import CameraTarget
from agent.clips.session import SessionPool
from camsim.media import MediaLibrary
from camsim.model import CameraSpec
from camsim.rtsp_server import RtspServer
from contract import topics
from contract.codec import encode
from contract.messages import ClipRequest, ClipUpdate, Priority
from tests.signed_commands import signed

DISTRICT = "gangnam"
FRAGMENT = 64 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


def clip_request(camera_id: str = "cam-1", *, start_in_s: float = 0.0, length_s: float = 1.0,
                 priority: Priority = "112", request_id: str | None = None) -> ClipRequest:  # fmt: skip
    """A request as the collector signs it."""
    start = utcnow() + timedelta(seconds=start_in_s)
    return signed(ClipRequest(
        district=DISTRICT, request_id=request_id or f"req-{uuid.uuid4().hex[:12]}", camera_id=camera_id,
        start=start, end=start + timedelta(seconds=length_s), purpose="test", agency="seoul-police",
        priority=priority, sent_at=utcnow(),
    ))  # fmt: skip


@dataclass
class FakePool:
    """Writes `rate_bps` of random bytes per second of window (real time, scaled by `speed`), in whole
    64 KiB 'fragments', to the output like the real capture; records the order of captures."""

    rate_bps: int = 4_000_000
    speed: float = 1.0
    earliest: datetime | None = None
    fail_with: str | None = None
    calls: list[str] = field(default_factory=list)
    armed: list[tuple[str, float]] = field(default_factory=list)
    held: dict[str, datetime] = field(default_factory=dict)  # request id -> window start, until released
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event | None = None  # when set: captures wait for it before writing

    def arm(self, camera_id: str, url: str, duration_s: float, clock_offset_s: float | None = None) -> None:
        self.armed.append((camera_id, duration_s))

    def earliest_buffered(self, camera_id: str) -> datetime | None:
        return self.earliest

    def hold(self, camera_id: str, key: str, start: datetime) -> None:
        self.held[key] = start

    def release_hold(self, camera_id: str, key: str) -> None:
        self.held.pop(key, None)

    def capture(
        self, camera_id: str, url: str, start: datetime, end: datetime, out_path: Path, *,
        clock_offset_s: float | None = None, cancel: threading.Event | None = None,
    ) -> CaptureResult:  # fmt: skip
        self.calls.append(out_path.stem)
        self.started.set()
        if self.release is not None:
            self.release.wait(30)
        if self.fail_with:
            return CaptureResult.failed(self.fail_with)
        total = int((end - start).total_seconds() * self.rate_bps / 8)
        digest = hashlib.sha256()
        began = time.monotonic()
        written = 0
        with out_path.open("wb") as f:
            while written < total and not (cancel and cancel.is_set()):
                chunk = hashlib.sha256(f"{out_path}{written}".encode()).digest() * (FRAGMENT // 32)
                chunk = chunk[: total - written]
                f.write(chunk)
                f.flush()
                digest.update(chunk)
                written += len(chunk)
                due = began + written * 8 / self.rate_bps / self.speed
                time.sleep(max(0.0, due - time.monotonic()))
        complete = written == total
        covered_end = start + timedelta(seconds=written * 8 / self.rate_bps)
        error = None if complete else "cancelled"
        return CaptureResult(start, covered_end, "local", written, digest.hexdigest(), "h264", 320, 180,
                             b"\xff\xd8fake\xff\xd9", complete, error)  # fmt: skip


def cameras(*, offline: tuple[str, ...] = ()) -> Any:
    def lookup(camera_id: str) -> CameraTarget | None:
        if not camera_id.startswith("cam-"):
            return None
        meta = {"manufacturer": "Hanwha", "model": "XNO-6080R", "firmware": "2.1"}
        return CameraTarget(camera_id, f"rtsp://user:secret@127.80.0.1:8554/{camera_id}",
                            online=camera_id not in offline, clock_offset_s=0.1, meta=meta)  # fmt: skip

    return lookup


class MqttPublisher:
    """The agent side: publishes ClipUpdates at QoS 1 and returns paho's receipt (what the outbox wants)."""

    def __init__(self, host: str, port: int, client_id: str = "agent-test") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async(host, port)
        self.client.loop_start()

    def __call__(self, update: ClipUpdate) -> mqtt.MQTTMessageInfo:
        delivery = encode(update)
        return self.client.publish(delivery.topic, delivery.payload, qos=delivery.qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class UpdateCollector:
    """The collector side: a persistent MQTT 5 session on the district's clip topics, updates by request."""

    def __init__(self, host: str, port: int) -> None:
        self.updates: dict[str, list[ClipUpdate]] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, *_: c.subscribe(topics.telemetry_filters(DISTRICT)[-1], qos=1)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect(host, port, clean_start=False, properties=props)
        self.client.loop_start()
        self.wait_connected()

    def wait_connected(self) -> None:
        deadline = time.monotonic() + 5
        while not self.client.is_connected():
            assert time.monotonic() < deadline, "collector did not connect"
            time.sleep(0.01)
        assert self.subscribed.wait(max(0.0, deadline - time.monotonic())), "collector did not subscribe"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        update = ClipUpdate.model_validate(json.loads(message.payload))
        with self._cond:
            self.updates.setdefault(update.request_id, []).append(update)
            self._cond.notify_all()

    def statuses(self, request_id: str) -> list[str]:
        with self._cond:
            return [u.status for u in self.updates.get(request_id, [])]

    def wait_status(self, request_id: str, status: str, timeout_s: float = 20.0) -> ClipUpdate:
        """The first update of a request with this status."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for update in self.updates.get(request_id, []):
                    if update.status == status:
                        return update
                left = deadline - time.monotonic()
                assert left > 0, f"no {status} update for {request_id}; got {self.statuses(request_id)}"
                self._cond.wait(left)

    def wait_final(self, request_id: str, timeout_s: float = 20.0) -> ClipUpdate:
        """The first `succeeded` or `failed` update of a request."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for update in self.updates.get(request_id, []):
                    if update.status in ("succeeded", "failed"):
                        return update
                left = deadline - time.monotonic()
                assert left > 0, f"no final update for {request_id}; got {self.statuses(request_id)}"
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@asynccontextmanager
async def serving(
    spec: CameraSpec, media: MediaLibrary, pool: SessionPool | None = None
) -> AsyncIterator[RtspServer]:
    """A camera; ``pool`` is closed before it stops (else its reader waits a read timeout for packets)."""
    server = RtspServer(spec, media)
    await server.start()
    try:
        yield server
    finally:
        if pool is not None:
            await asyncio.to_thread(pool.close)
        await server.stop()
