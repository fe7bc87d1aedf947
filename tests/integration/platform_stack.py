"""The whole platform on real parts, for the end-to-end test and `bench.golden_time`: a `cctv-collector run`
process (a test identity provider with the example agency policy, its command key, a clip bucket and an
audit bucket under Object Lock in the Ceph S3 gateway) and a district agent in this process that trusts the
collector's public key (from `cctv-collector commands public-key`), on a real Mosquitto.

Not a test module. The camera fleet is the caller's (`simulated_district` starts one): `platform_stack` takes
its ledger and secrets.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from agent.app import Agent
from agent.config import AgentSettings
from camsim.fleet import Fleet, FleetOptions, build_specs
from camsim.ledger import write_ledger, write_secrets
from camsim.media import MediaLibrary
from camsim.model import CameraSpec
from collector.access.tokens import issue_token, jwks_for
from common.settings import load
from common.signing import key_id, load_or_create_key, public_key_pem
from tests.services import CephS3, Mosquitto, free_port

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "policy.example.toml"
ISSUER, AUDIENCE = "https://idp.test.example", "cctv-platform"
CLI = "import sys; from {0}.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Stack:
    directory: Path
    collector_config: Path
    agent_config: Path
    api: httpx.AsyncClient
    agent: Agent
    s3: Any  # S3Client of the gateway
    clip_bucket: str
    audit_bucket: str
    collector_pid: int = 0
    agent_pid: int | None = None  # the agent's own process (agent_process=True): `agent` is then not running

    def auth(self, agency: str, role: str, sub: str) -> dict[str, str]:
        """An Authorization header minted by the test identity provider the collector trusts."""
        token = issue_token(
            self.directory / "idp.key", sub=sub, agency=agency, role=role, iss=ISSUER, aud=AUDIENCE, ttl_s=600
        )
        return {"Authorization": f"Bearer {token}"}

    async def collector_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await run_cli("collector", *args, "--config", str(self.collector_config))

    async def agent_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await run_cli("agent", *args, "--config", str(self.agent_config))


async def run_cli(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`cctv-<program> args...` in its own process (this interpreter, so PYTHONPATH holds)."""
    command = [sys.executable, "-c", CLI.format(program), *args]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)


@asynccontextmanager
async def platform_stack(
    directory: Path,
    broker: Mosquitto,
    ceph: CephS3,
    *,
    district: str,
    ledger: Path,
    secrets: Path,
    clips: dict[str, object] | None = None,
    health: dict[str, object] | None = None,
    policy: Path = POLICY,
    live: dict[str, object] | None = None,
    agent_live: dict[str, object] | None = None,
    agent_s3_endpoint: str | None = None,
    agent_process: bool = False,
) -> AsyncIterator[Stack]:
    """Collector and agent up (the API answering, the agent running); both stopped on the way out, the
    collector with SIGTERM (it writes a last audit checkpoint then). `live` and `agent_live`: the collector's
    and the agent's `[live]` sections; `agent_s3_endpoint`: the agent's way to the gateway (a proxy);
    `agent_process`: the agent runs as `cctv-agent run` in a process of its own (its CPU measurable)."""
    s3 = ceph.client()
    clip_bucket, audit_bucket = f"clips-{uuid.uuid4().hex[:12]}", f"audit-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=clip_bucket)
    s3.create_bucket(Bucket=audit_bucket, ObjectLockEnabledForBucket=True)
    http_port = free_port()
    collector_config = _collector_config(
        directory, broker, ceph, clip_bucket=clip_bucket, audit_bucket=audit_bucket, http_port=http_port,
        policy=policy, live=live or {},
    )  # fmt: skip
    key = await run_cli("collector", "commands", "public-key", "--config", str(collector_config))
    if key.returncode != 0:
        raise RuntimeError(f"cctv-collector commands public-key: {key.stderr}")
    (directory / "collector-commands.pem").write_text(key.stdout)
    agent_config = _agent_config(
        directory, broker, ceph, clip_bucket, district=district, ledger=ledger, secrets=secrets,
        clips=clips or {}, health=health or {}, live=agent_live or {}, s3_endpoint=agent_s3_endpoint,
    )  # fmt: skip
    settings = load(AgentSettings, agent_config)
    # The collector checks each delivered clip's manifest against the district agent's public key.
    agent_key = load_or_create_key(settings.clips.key_file)
    (directory / "agent-keys" / f"{district}.pem").write_bytes(public_key_pem(agent_key))
    log = (directory / "collector.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI.format("collector"), "run", "--config", str(collector_config), stderr=log
    )
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10)
    agent = Agent(settings)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    child: asyncio.subprocess.Process | None = None
    try:
        await _wait(lambda: _healthy(api), 30, "the collector's API", proc)
        if agent_process:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLI.format("agent"), "run", "--config", str(agent_config),
                stderr=(directory / "agent.log").open("wb"),
            )  # fmt: skip
        else:
            task = asyncio.create_task(agent.run(stop))
        yield Stack(directory, collector_config, agent_config, api, agent, s3, clip_bucket, audit_bucket,
                    proc.pid, child.pid if child is not None else None)  # fmt: skip
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 60)
        if child is not None:
            child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.wait(), 60)
        await api.aclose()
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            log.close()


@asynccontextmanager
async def district_agent(
    stack: Stack, broker: Mosquitto, ceph: CephS3, *, district: str, ledger: Path, secrets: Path
) -> AsyncIterator[Agent]:
    """Another district's agent beside the stack's own (its files in a folder of its own), trusted by the
    collector like the first: its manifest key in the collector's agent-keys folder."""
    directory = stack.directory / district
    directory.mkdir()
    shutil.copy(stack.directory / "collector-commands.pem", directory)
    config = _agent_config(
        directory, broker, ceph, stack.clip_bucket, district=district, ledger=ledger, secrets=secrets,
        clips={}, health={}, live={}, s3_endpoint=None,
    )  # fmt: skip
    settings = load(AgentSettings, config)
    key = load_or_create_key(settings.clips.key_file)
    (stack.directory / "agent-keys" / f"{district}.pem").write_bytes(public_key_pem(key))
    agent = Agent(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@asynccontextmanager
async def simulated_district(
    directory: Path, district: str, cameras: int, base_ip: str, media_cache: Path
) -> AsyncIterator[list[CameraSpec]]:
    """H.264 cameras (960x540, a keyframe a second) at the district's first positions of the real camera data,
    their ledger and secrets written to `directory`; `media_cache` keeps the encoded picture between tests."""
    specs = build_specs(FleetOptions(district, cameras, base_ip, free_port(), free_port()))
    for spec in specs:
        spec.codec, spec.main_size, spec.gop = "h264", (960, 540), 25
    write_ledger(specs, directory / "ledger.csv")
    write_secrets(specs, directory / "secrets.toml")
    fleet = Fleet(specs, media=MediaLibrary(media_cache, loop_s=4.0), wsd_port=free_port())
    await fleet.start()
    try:
        yield specs
    finally:
        await fleet.stop()


async def clip_finished(stack: Stack, auth: dict[str, str], clip_id: str) -> dict[str, Any] | None:
    """The clip as `GET /v1/clips/{id}` shows it once it succeeded or failed; None before."""
    r = await stack.api.get(f"/v1/clips/{clip_id}", headers=auth)
    assert r.status_code == 200, r.text
    clip: dict[str, Any] = r.json()
    return clip if clip["state"] in ("succeeded", "failed") else None


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    """Await `check()` (a coroutine function) until it returns something true; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


async def cameras_ready(stack: Stack, count: int) -> bool:
    """The collector's index shows `count` cameras online (as the platform operator sees it), and its
    nearest-camera index, rebuilt a moment after the cameras table changes, holds them (its log says so)."""
    ops = stack.auth("platform-ops", "platform", "ops-test")
    r = await stack.api.get("/v1/cameras", params={"state": "online", "limit": 500}, headers=ops)
    if r.status_code != 200 or r.json()["count"] < count:
        return False
    rebuilt = "nearest-camera index rebuilt: "
    for line in (stack.directory / "collector.log").read_text(errors="replace").splitlines()[::-1]:
        message = str(json.loads(line).get("msg", "")) if line.startswith("{") else ""
        if message.startswith(rebuilt):
            return int(message.removeprefix(rebuilt).split()[0]) >= count
    return False


def store_url(directory: Path) -> str:
    """The collector's index (SQLite): the audit trail is read from it as an auditor would."""
    return f"sqlite://{directory / 'index.db'}"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _collector_config(
    directory: Path,
    broker: Mosquitto,
    ceph: CephS3,
    *,
    clip_bucket: str,
    audit_bucket: str,
    http_port: int,
    policy: Path,
    live: dict[str, object],
) -> Path:
    idp = load_or_create_key(directory / "idp.key")
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps(jwks_for(idp.public_key(), key_id(idp.public_key()))))
    (directory / "agent-keys").mkdir(parents=True, exist_ok=True)
    path = directory / "collector.toml"
    path.write_text(
        f"""collector_id = "golden"
metrics_port = {free_port()}
[mqtt]
host = "{broker.host}"
port = {broker.port}
[store]
url = "{store_url(directory)}"
[http]
port = {http_port}
[access]
jwks_file = "{jwks}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
policy_file = "{policy}"
[commands]
key_file = "{directory / "commands.key"}"
republish_interval_s = 1.0
[platform]
agent_keys_dir = "{directory / "agent-keys"}"
nearest_refresh_s = 0.2
{_s3(ceph, clip_bucket)}
[audit]
bucket = "{audit_bucket}"
key_path = "{directory / "audit-key.pem"}"
checkpoint_interval_s = 1.0
retention_days = 365
[live]
{_toml_lines(live)}
"""
    )
    return path


def _agent_config(
    directory: Path,
    broker: Mosquitto,
    ceph: CephS3,
    clip_bucket: str,
    *,
    district: str,
    ledger: Path,
    secrets: Path,
    clips: dict[str, object],
    health: dict[str, object],
    live: dict[str, object],
    s3_endpoint: str | None,
) -> Path:
    path = directory / "agent.toml"
    path.write_text(
        f"""district = "{district}"
agent_id = "{district}-golden"
ledger = "{ledger}"
secrets_file = "{secrets}"
metrics_port = 0
[mqtt]
host = "{broker.host}"
port = {broker.port}
reconnect_max_s = 1
[onvif]
timeout_s = 3.0
[health]
{_toml_lines({"liveness_interval_s": 1.0, "snapshot_interval_s": 5.0, "stream_interval_s": 60.0, **health})}
[commands]
collector_public_keys = ["{directory / "collector-commands.pem"}"]
{_s3(ceph, clip_bucket, s3_endpoint)}
[clips]
{_toml_lines({"spool_dir": str(directory / "spool"), "key_file": str(directory / "agent.key"), **clips})}
[live]
{_toml_lines(live)}
"""
    )
    path.chmod(0o600)
    return path


def _s3(ceph: CephS3, bucket: str, endpoint: str | None = None) -> str:
    return (
        f'[s3]\nendpoint_url = "{endpoint or ceph.endpoint}"\nregion = "{ceph.region}"\nbucket = "{bucket}"\n'
        f'access_key = "{ceph.access_key}"\nsecret_key = "{ceph.secret_key}"'
    )


def _toml_lines(values: dict[str, object]) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())


async def _healthy(api: httpx.AsyncClient) -> bool:
    try:
        return (await api.get("/v1/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def _wait(
    check: Callable[[], Any], timeout_s: float, what: str, proc: asyncio.subprocess.Process
) -> None:
    async def alive_and() -> bool:
        if proc.returncode is not None:
            raise RuntimeError(f"{what}: the collector exited with {proc.returncode} (see collector.log)")
        return bool(await check())

    await wait_for(alive_and, timeout_s, what)


def decode(body: bytes) -> tuple[int, float]:
    """Decode an MP4 with PyAV as a player would: (video frames, seconds from the first frame to the last
    frame's end). Raises av.error.FFmpegError when it is not playable."""
    import io

    import av

    frames, first, last = 0, None, 0.0
    with av.open(io.BytesIO(body), mode="r") as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        for frame in container.decode(stream):
            frames += 1
            if frame.time is not None:
                first = frame.time if first is None else min(first, frame.time)
                last = max(last, frame.time)
    return frames, (last - (first or 0.0) + 1 / rate) if frames else 0.0
