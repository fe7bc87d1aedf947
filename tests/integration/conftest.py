"""Shared by the integration tests: a simulated district of twelve cameras (one per health state, through
camsim's faults), an agent configured for it, a recording subscriber, and helpers to run and wait."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from agent.config import AgentSettings
from camsim.fleet import Fleet, FleetOptions, build_specs
from camsim.ledger import write_ledger, write_secrets
from camsim.media import MediaLibrary
from camsim.personalities import load_personalities
from tests.services import CephS3, Mosquitto, free_port
from tests.signed_commands import collector_key_file

BASE_IP, ONVIF_PORT, RTSP_PORT, WSD_PORT = "127.51.0.1", 18180, 18654, 13802
GOLDEN = Path(__file__).parents[1] / "contract" / "golden"

# camera number -> (fault fields, expected state, expected reasons)
EXPECTED = {
    1: ({}, "online", []),
    2: ({"clock_skew_s": 90.0}, "degraded", ["clock_skew"]),
    3: ({"image": "black"}, "degraded", ["image_black"]),
    4: ({"wrong_credentials": True}, "unauthorized", ["credentials_rejected"]),
    5: ({"offline": True}, "offline", ["unreachable"]),
    6: ({"hang": True}, "offline", ["timeout"]),
    7: ({"image": "covered"}, "degraded", ["image_covered"]),
    8: ({}, "degraded", ["firmware_below_minimum"]),
    9: ({"image": "frozen"}, "degraded", ["image_frozen"]),
    10: ({"image": "blurred"}, "degraded", ["image_blurred"]),
    11: ({}, "degraded", ["sub_stream_only"]),  # its main profile is gone: only 640x360 is offered
    12: ({}, "online", []),  # sends a 2,000-character manufacturer string
}


class Recorder:
    """A bare paho subscriber that keeps every byte it received and the latest payload per topic."""

    def __init__(self, port: int) -> None:
        self.raw: list[bytes] = []
        self.latest: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("cctv/v1/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.raw.append(message.topic.encode() + b" " + bytes(message.payload))
            self.latest[message.topic] = json.loads(message.payload)

    def get(self, topic: str) -> dict[str, object] | None:
        with self._lock:
            return self.latest.get(topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def assert_documented(kind: str, payload: dict[str, object] | None) -> None:
    """The golden example other teams build against shows every field the real agent sends."""
    assert payload is not None
    example = json.loads((GOLDEN / f"{kind}.json").read_text(encoding="utf-8"))["payload"]
    assert set(payload) <= set(example), f"{kind}: {set(payload) - set(example)} missing from the golden"


@asynccontextmanager
async def running(agent: Agent, timeout_s: float = 30) -> AsyncIterator[asyncio.Task[None]]:
    """The agent's run loop, stopped as SIGTERM would stop it, and awaited on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout_s)


async def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def district(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Fleet, Path]]:
    options = FleetOptions("gangnam", len(EXPECTED), BASE_IP, ONVIF_PORT, RTSP_PORT)
    specs = build_specs(options)
    dahua = load_personalities()["dahua"]
    for number, (faults, _, _) in EXPECTED.items():
        spec = specs[number - 1]
        spec.personality = dataclasses.replace(spec.personality, h265_only=False)
        spec.codec = "h264"
        # Keyframes 1 s apart and checks 2 s apart: two checks of a moving picture never see the same frame.
        spec.gop = 25
        for key, value in faults.items():
            setattr(spec.faults, key, value)
    specs[7].personality = dataclasses.replace(dahua, firmware="2.700.0000000.1.R")
    specs[10].main_size = specs[10].sub_size
    specs[11].personality = dataclasses.replace(specs[11].personality, manufacturer="X" * 2000)
    write_ledger(specs, tmp_path / "ledger.csv")
    write_secrets(specs, tmp_path / "secrets.toml")
    media = MediaLibrary(tmp_path_factory.getbasetemp() / "clip-cache", loop_s=20.0)
    fleet = Fleet(specs, media=media, rtsp=True, wsd_port=WSD_PORT)
    await fleet.start()
    yield fleet, tmp_path
    await fleet.stop()


@asynccontextmanager
async def one_camera(
    directory: Path, cache: Path, base_ip: str, onvif_port: int, rtsp_port: int
) -> AsyncIterator[Path]:
    """One simulated H.264 camera (960x540, a keyframe a second); its ledger and secrets in `directory`."""
    specs = build_specs(FleetOptions("gangnam", 1, base_ip, onvif_port, rtsp_port))
    specs[0].codec, specs[0].main_size, specs[0].gop = "h264", (960, 540), 25
    write_ledger(specs, directory / "ledger.csv")
    write_secrets(specs, directory / "secrets.toml")
    fleet = Fleet(specs, media=MediaLibrary(cache / "clip-cache", loop_s=4.0))
    await fleet.start()
    try:
        yield directory
    finally:
        await fleet.stop()


def camera_fixture(base_ip: str, ports: tuple[int, int] | None = None) -> Any:
    """A test module's `camera` fixture: `one_camera` on the module's own addresses (`base_ip`), in its
    tmp_path, on `ports` (ONVIF, RTSP) or free ones."""

    @pytest.fixture
    async def camera(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Path]:
        onvif_port, rtsp_port = ports or (free_port(), free_port())
        async with one_camera(tmp_path, tmp_path_factory.getbasetemp(), base_ip, onvif_port, rtsp_port) as d:
            yield d

    return camera


def agent_settings(directory: Path, broker: Mosquitto) -> AgentSettings:
    return AgentSettings(
        district="gangnam",
        agent_id="gangnam-test",
        ledger=directory / "ledger.csv",
        secrets_file=directory / "secrets.toml",
        metrics_port=0,
        clips={"spool_dir": directory / "spool", "key_file": directory / "signing.key"},
        commands={"collector_public_keys": [collector_key_file(directory)]},
        mqtt={"host": broker.host, "port": broker.port, "reconnect_max_s": 1},
        onvif={"timeout_s": 2.0},
        discovery={
            "targets": [f"{BASE_IP}/27"],
            "port": WSD_PORT,
            "window_s": 1.0,
        },
        health={"liveness_interval_s": 0.5, "snapshot_interval_s": 1.0, "stream_interval_s": 2.0},
    )


def clip_agent_settings(
    directory: Path,
    broker: Mosquitto,
    ceph: CephS3,
    bucket: str,
    agent_id: str,
    *,
    s3: dict[str, Any] | None = None,
    clips: dict[str, Any] | None = None,
    **commands: Any,
) -> AgentSettings:
    """An agent for the `one_camera` in `directory` that cuts clips into `bucket` on the Ceph S3 gateway;
    `s3` and `clips` add to (or override) those sections, `commands` is the `[commands]` section."""
    return AgentSettings(
        district="gangnam", agent_id=agent_id, ledger=directory / "ledger.csv",
        secrets_file=directory / "secrets.toml", metrics_port=0,
        mqtt={"host": broker.host, "port": broker.port},
        health={"liveness_interval_s": 0.5, "stream_interval_s": 60},
        s3={"endpoint_url": ceph.endpoint, "region": ceph.region, "bucket": bucket,
            "access_key": ceph.access_key, "secret_key": ceph.secret_key} | (s3 or {}),
        clips={"spool_dir": directory / "spool", "key_file": directory / "signing.key"} | (clips or {}),
        commands=commands,
    )  # fmt: skip
