"""The rig of bench.platform: a city of cameras in the index, a real `cctv-collector run` trusting a test
identity provider, the operators' HTTP connections, and the district agents' side of the broker."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.nearest import city, real_cameras
from collector.access.tokens import issue_token, jwks_for
from collector.index.geo import district_at
from collector.index.spatial import EARTH_RADIUS_M, CameraPoint
from collector.index.store import Batch, open_store
from common.signing import key_id, load_or_create_key
from contract import topics
from contract.codec import encode
from contract.districts import DISTRICTS
from contract.messages import AgentState, AnyMessage, CameraMeta, CameraStatus, ClipUpdate
from tests.services import Mosquitto, free_port

ISSUER, AUDIENCE = "https://idp.bench.example", "cctv-platform"
POLICY = Path(__file__).resolve().parents[1] / "deploy" / "policy.example.toml"
UNLIMITED_PER_MIN = 1_000_000
LOAD_CHUNK = 5000


# ---- the city in the index ---------------------------------------------------------------------------------
def city_messages(now: datetime) -> list[AnyMessage]:
    """The 68,000 cameras as their district agents report them: all online, all 25 agents online."""
    cameras = city(real_cameras())
    messages: list[AnyMessage] = [
        AgentState(district=d, agent_id=f"agent-{d}", state="online", session=1, version="1.0.0", sent_at=now)
        for d in sorted(DISTRICTS)
    ]
    for c in cameras:
        ids = {"district": c.district, "camera_id": c.camera_id, "agent_id": f"agent-{c.district}"}
        where = {"name": f"{c.district} {c.camera_id}", "lat": c.lat, "lon": c.lon}
        identity = {"identity": f"ledger:{c.camera_id}", "identity_kind": "ledger"}
        messages.append(CameraMeta(**ids, **where, **identity, updated_at=now))
        messages.append(CameraStatus(**ids, state="online", since=now, checked_at=now))
    return messages


def load_city(url: str, messages: list[AnyMessage]) -> None:
    store = open_store(url)
    try:
        store.migrate()
        for start in range(0, len(messages), LOAD_CHUNK):
            batch = Batch()
            for m in messages[start : start + LOAD_CHUNK]:
                batch.add(m)
            store.apply(batch)
    finally:
        store.close()


def incident_places(cameras: list[CameraPoint], n: int, seed: int) -> list[tuple[float, float]]:
    """`n` real places in Seoul: a real camera's position moved by up to 150 m (still inside a district)."""
    rng = random.Random(seed)
    per_degree = EARTH_RADIUS_M * math.pi / 180
    out: list[tuple[float, float]] = []
    while len(out) < n:
        c = rng.choice(cameras)
        metres, angle = rng.uniform(0, 150), rng.uniform(0, 2 * math.pi)
        lat = c.lat + metres * math.cos(angle) / per_degree
        lon = c.lon + metres * math.sin(angle) / (per_degree * math.cos(math.radians(c.lat)))
        if district_at(lat, lon) is not None:
            out.append((lat, lon))
    return out


# ---- the collector process ---------------------------------------------------------------------------------
@dataclass
class Collector:
    proc: subprocess.Popen[bytes]
    port: int
    idp_key: Path
    log: Path

    def token(self, agency: str, sub: str) -> str:
        return issue_token(self.idp_key, sub=sub, agency=agency, role="operator", iss=ISSUER, aud=AUDIENCE,
                           ttl_s=3600)  # fmt: skip


def write_config(directory: Path, broker: Mosquitto, url: str) -> tuple[Path, int, Path]:
    """collector.toml, the identity provider's key and JWKS, and the policy with its rate limits raised."""
    idp_key = directory / "idp.key"
    public = load_or_create_key(idp_key).public_key()
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps(jwks_for(public, key_id(public))))
    policy = directory / "policy.toml"
    lines = POLICY.read_text().splitlines()
    policy.write_text("\n".join(line for line in lines if not line.startswith("rate_per_min")) + "\n")
    port = free_port()
    config = directory / "collector.toml"
    config.write_text(
        f'collector_id = "bench-platform"\nmetrics_port = {free_port()}\n[mqtt]\nport = {broker.port}\n'
        f'[store]\nurl = "{url}"\n[http]\nport = {port}\n'
        f'[access]\njwks_file = "{jwks}"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        f'policy_file = "{policy}"\n'
        f"[access.rate]\naccount_per_min = {UNLIMITED_PER_MIN}\nagency_per_min = {UNLIMITED_PER_MIN}\n"
        f'[commands]\nkey_file = "{directory / "commands.key"}"\n'
    )
    return config, port, idp_key


@contextlib.contextmanager
def collector(directory: Path, broker: Mosquitto, url: str) -> Iterator[Collector]:
    """`cctv-collector run` in its own process, up once /v1/healthz answers 200; SIGTERM at the end."""
    config, port, idp_key = write_config(directory, broker, url)
    log = directory / "collector.log"
    code = "import sys; from collector.cli import main; sys.exit(main(sys.argv[1:]))"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, "run", "--config", str(config)], stderr=err)
    running = Collector(proc, port, idp_key, log)
    try:
        wait_healthy(running)
        yield running
        proc.send_signal(signal.SIGTERM)
        if proc.wait(60) != 0:
            raise RuntimeError(f"the collector exited {proc.returncode}: {log.read_text()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_healthy(c: Collector, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if c.proc.poll() is not None:
            raise RuntimeError(f"the collector exited {c.proc.returncode}: {c.log.read_text()[-2000:]}")
        probe = Api(c.port, None)
        try:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if probe.call("GET", "/v1/healthz")[0] == 200:
                    return
        finally:
            probe.conn.close()
        time.sleep(0.1)
    raise TimeoutError(f"the collector's API did not come up: {c.log.read_text()[-2000:]}")


# ---- an operator's connection ------------------------------------------------------------------------------
class Api:
    """One operator's keep-alive connection; `call` answers (status, decoded JSON body)."""

    def __init__(self, port: int, token: str | None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.auth = {} if token is None else {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: object = None, *, auth: bool = True) -> tuple[int, Any]:
        headers = dict(self.auth) if auth else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=payload, headers=headers)  # one send: bytes body and headers
        response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None


# ---- the district agents on the broker ---------------------------------------------------------------------
class Agents:
    """The 25 district agents as the broker sees them: subscribed to every district's commands, each clip
    command answered `accepted` at once (so the outbox stops republishing it, as in service). Records the
    first arrival (epoch s) of each request id."""

    def __init__(self, broker: Mosquitto) -> None:
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{topics.ROOT}/+/cmd/#", qos=1)
        if not subscribed.wait(10):
            raise TimeoutError("no SUBACK from the broker")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        command = json.loads(msg.payload)
        with self.lock:
            first = self.seen.setdefault(command["request_id"], arrived) == arrived
        if first and msg.topic.endswith("/cmd/clip"):
            answer = ClipUpdate(
                district=command["district"],
                request_id=command["request_id"],
                camera_id=command["camera_id"],
                agent_id=f"agent-{command['district']}",
                status="accepted",
                sent_at=datetime.now(UTC),
            )
            delivery = encode(answer)
            self.client.publish(delivery.topic, delivery.payload, qos=1)

    def wait_for(self, request_ids: set[str], timeout_s: float = 60) -> int:
        """How many of `request_ids` arrived, waiting up to `timeout_s` for all."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if request_ids <= self.seen.keys():
                    break
            time.sleep(0.05)
        with self.lock:
            return len(request_ids & self.seen.keys())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
