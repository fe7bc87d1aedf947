"""Recorded footage (ONVIF Profile G): 30 s of 1080p from 20 minutes ago, delivered from the request.

    python -m bench.replay [--quick] [--json]

The real parts: a district agent in this process (its sweep learns which cameras are on the recorder, as in
production), a real Mosquitto, the Ceph S3 gateway, and camsim in a child process (its CPU is nobody's):
ten Gangnam cameras whose footage lives on one recorder (`recorders.csv`), which serves Search, Replay and
RTSP replay of 1080p H.264 (25 fps, a keyframe a second, ~2.3 Mbit/s). The recorder has the benchmark's
windows encoded before it serves (a real recorder has them on disk; camsim synthesises footage on demand).
Anchor, in the same run: real-time playback of the same 30 s window, timed from PLAY to its last frame over
the agent's own replay client with `Rate-Control: yes` (what a person watching it would wait).
(a) One request: from publishing the signed ClipRequest to the agent's `succeeded` (clip object complete in
    S3, thumbnail and signed manifest uploaded); then the object's digest metadata, the manifest's
    signature and `source: recording` are checked. Median of 3 requests of different cameras.
(b) Ten requests at once, one per camera of the district, 30 s each from 21 minutes ago: every one must
    complete; p50/p95/max reported. The agent runs with `clips.max_concurrent_captures` and
    `max_concurrent_parts` = 10 (a district serving ten clips at once configures that many).
Bar: (a) / anchor <= 0.17 (30 s delivered in at most 5.1 s). --quick: (a) once, (b) with 4 requests.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Report, parser, serving_child

BASE_IP, NVR_IP, NVR = "127.63.1.1", "127.63.1.200", "gangnam-nvr01"
CAMERAS, WINDOW_S, AGO_S, AT_ONCE_AGO_S = 10, 30, 20 * 60, 21 * 60
BAR = 0.17


# -- camsim child -----------------------------------------------------------------------------------------
def serve(directory: Path) -> None:
    """Child mode: the district and its recorder (ledgers, secrets in `directory`) until stdin closes."""
    from camsim.fleet import Fleet, FleetOptions, build_specs, recorder_spec
    from camsim.ledger import write_ledger, write_secrets
    from camsim.media import MediaLibrary
    from camsim.recording import Archive
    from tests.services import free_port

    async def run() -> None:
        options = FleetOptions("gangnam", CAMERAS, BASE_IP, free_port(), free_port())
        specs = build_specs(options)
        for spec in specs:
            spec.codec, spec.main_size = "h264", (1920, 1080)
        nvr = recorder_spec(options, NVR, NVR_IP, specs)
        archive = Archive()
        archive.record([*specs, nvr])
        for recording in archive.recordings.values():
            recording.gaps = []  # the benchmark asks for recorded windows
        now = int(time.time())
        seconds = range(now - AT_ONCE_AGO_S - 2, now - AGO_S + WINDOW_S + 120)  # both windows, with slack
        await asyncio.gather(*(asyncio.to_thread(archive.footage.gop, archive.profile, s) for s in seconds))
        write_ledger(specs, directory / "ledger.csv")
        write_ledger([nvr], directory / "recorders.csv")
        write_secrets([*specs, nvr], directory / "secrets.toml")
        media = MediaLibrary(Path.home() / ".cache" / "camsim", loop_s=10)
        fleet = Fleet([*specs, nvr], media=media, archive=archive, wsd_port=free_port())
        await fleet.start()
        replay = {"host": nvr.host, "port": nvr.rtsp_port, "password": nvr.password}
        print(json.dumps({"cameras": [s.camera_id for s in specs], "replay": replay}), flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
        await fleet.stop()

    asyncio.run(run())


# -- anchor: real-time playback -----------------------------------------------------------------------------
def real_time_playback(replay: dict[str, Any], camera_id: str, start: datetime) -> float:
    """Seconds from PLAY to the last frame of [start, start + WINDOW_S) replayed at real time."""
    from pydantic import SecretStr

    from agent.credentials import Credentials
    from agent.recorded.rtsp_replay import ReplaySession

    creds = Credentials("admin", SecretStr(replay["password"]))
    path = f"/replay/rec-{camera_id}"
    with ReplaySession(replay["host"], replay["port"], path, creds, open_timeout_s=5, read_timeout_s=5) as s:
        began = time.monotonic()
        s.play(start.timestamp(), start.timestamp() + WINDOW_S, rate_control=True)
        for frame in s.frames():
            if frame.last:
                return time.monotonic() - began
    raise RuntimeError("the replay ended without its last frame")


# -- the agent's path ---------------------------------------------------------------------------------------
class District:
    """A running agent, a broker subscriber collecting results, and the bucket."""

    def __init__(self, agent: Any, client: Any, bucket: str, broker_port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.agent, self.client, self.bucket = agent, client, bucket
        self.finals: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._loop, self._arrived = asyncio.get_running_loop(), asyncio.Event()
        self.mqtt = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.mqtt.on_message = self._on_message
        self.mqtt.connect("127.0.0.1", broker_port)
        self.mqtt.subscribe("cctv/v1/gangnam/clip/#", qos=1)
        self.mqtt.loop_start()

    def _on_message(self, _c: object, _u: object, message: Any) -> None:
        update = json.loads(message.payload)
        if update.get("status") in ("succeeded", "failed"):
            with self._lock:
                self.finals.setdefault(update["request_id"], (time.monotonic(), update))
            self._loop.call_soon_threadsafe(self._arrived.set)

    def request(self, camera_id: str, start: datetime) -> tuple[str, float]:
        """Publish a signed request for [start, start + WINDOW_S); (request id, when it was sent)."""
        from contract.codec import encode
        from contract.messages import ClipRequest
        from tests.signed_commands import signed

        now = datetime.now(UTC)
        request = signed(ClipRequest(
            district="gangnam", request_id=f"bench-{uuid.uuid4().hex[:12]}", camera_id=camera_id, start=start,
            end=start + timedelta(seconds=WINDOW_S), purpose="replay benchmark", agency="police-112",
            priority="112", sent_at=now,
        ))  # fmt: skip
        delivery = encode(request)
        sent = time.monotonic()
        self.mqtt.publish(delivery.topic, delivery.payload, qos=1)
        return request.request_id, sent

    async def delivered(self, requests: list[tuple[str, float]], timeout_s: float = 120) -> list[float]:
        """Seconds from each request to its `succeeded`; raises if one fails or is missing."""
        async with asyncio.timeout(timeout_s):
            while any(r not in self.finals for r, _ in requests):
                await self._arrived.wait()
                self._arrived.clear()
        out = []
        for request_id, sent in requests:
            when, update = self.finals.get(request_id, (0.0, {"status": "missing"}))
            if update["status"] != "succeeded" or update.get("reason"):
                raise RuntimeError(f"{request_id}: {update['status']} {update.get('reason')}")
            self.check(update)
            out.append(when - sent)
        return out

    def check(self, update: dict[str, Any]) -> None:
        """The object is complete (its digest metadata), the manifest verifies and says `recording`."""
        from agent.clips.manifest import verify
        from common.signing import load_or_create_key, public_key_pem

        head = self.client.head_object(Bucket=self.bucket, Key=update["object_key"])
        body = self.client.get_object(Bucket=self.bucket, Key=update["object_key"])["Body"].read()
        raw = self.client.get_object(Bucket=self.bucket, Key=update["manifest_key"])["Body"].read()
        manifest = json.loads(raw)
        key_pem = public_key_pem(load_or_create_key(self.agent.settings.clips.key_file))
        if head["Metadata"].get("sha256") != update["sha256"] or verify(body, manifest, key_pem):
            raise RuntimeError(f"{update['request_id']}: object or manifest does not verify")
        if manifest.get("source") != "recording" or not manifest["covered"]["complete"]:
            raise RuntimeError(f"{update['request_id']}: not a complete recorded clip")

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()


async def measure(work: Path, served: dict[str, Any], quick: bool) -> dict[str, Any]:
    from agent.app import Agent
    from agent.clips.s3 import make_client
    from agent.config import AgentSettings
    from tests.services import CephS3, Mosquitto
    from tests.signed_commands import collector_key_file

    cameras: list[str] = served["cameras"]
    now = time.time()
    window = datetime.fromtimestamp(int(now - AGO_S), UTC)
    at_once = datetime.fromtimestamp(int(now - AT_ONCE_AGO_S), UTC)
    anchor: list[float] = []
    playback = threading.Thread(  # paced by the clock: overlapping the services' start does not change it
        target=lambda: anchor.append(real_time_playback(served["replay"], cameras[0], window))
    )
    playback.start()
    with CephS3().start(work / "ceph") as ceph, Mosquitto().start(work / "mqtt") as broker:
        settings = AgentSettings(
            district="gangnam", agent_id="gangnam-bench", ledger=work / "ledger.csv",
            secrets_file=work / "secrets.toml", metrics_port=0,
            mqtt={"host": broker.host, "port": broker.port},
            health={"stream_interval_s": 600.0},
            s3={"endpoint_url": ceph.endpoint, "region": ceph.region, "bucket": "bench-replay",
                "access_key": ceph.access_key, "secret_key": ceph.secret_key},
            clips={"spool_dir": work / "spool", "key_file": work / "signing.key",
                   "max_concurrent_captures": 10, "max_concurrent_parts": 10},
            commands={"collector_public_keys": [collector_key_file(work)]},
            recorded={"recorders": work / "recorders.csv"},
        )  # fmt: skip
        client = make_client(settings.s3)
        client.create_bucket(Bucket="bench-replay")
        agent = Agent(settings)
        stop = asyncio.Event()
        running = asyncio.create_task(agent.run(stop))
        district = District(agent, client, "bench-replay", broker.port)
        try:
            await _ready(agent, cameras)
            await asyncio.to_thread(playback.join)  # the anchor runs alone before our requests
            single = []
            for camera_id in cameras[1 : 2 if quick else 4]:
                single += await district.delivered([district.request(camera_id, window)])
            requests = [district.request(c, at_once) for c in cameras[: 4 if quick else CAMERAS]]
            together = await district.delivered(requests)
        finally:
            district.close()
            stop.set()
            await asyncio.wait_for(running, 60)
    return {"anchor": anchor[0], "single": single, "together": sorted(together)}


async def _ready(agent: Any, cameras: list[str]) -> None:
    """Until the agent knows the recorder serves every camera (its first sweep and recordings check)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(agent.recorded.why_not(c) is None for c in cameras):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"recorder not learned: {agent.recorded.why_not(cameras[0])}")


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main(argv: list[str] | None = None) -> int:
    p = parser("replay", __doc__ or "")
    p.add_argument("--serve", type=Path, help=_hidden())
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    report = Report("replay")
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        work = Path(tmp)
        child, served = serving_child(["-m", "bench.replay", "--serve", str(work)])
        try:
            result = asyncio.run(measure(work, served, args.quick))
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(30)
    median, together = statistics.median(result["single"]), result["together"]
    report.add("window_s", WINDOW_S)
    report.add("window_ago_s", AGO_S)
    report.add("real_time_playback_s", round(result["anchor"], 2))
    report.add("request_to_delivered_s", [round(s, 3) for s in result["single"]])
    report.add("request_to_delivered_median_s", round(median, 3))
    report.add("at_once_requests", len(together))
    report.add("at_once_p50_s", round(statistics.median(together), 3))
    report.add("at_once_p95_s", round(_percentile(together, 0.95), 3))
    report.add("at_once_max_s", round(together[-1], 3))
    ratio = median / result["anchor"]
    report.add("bar_ratio", BAR)
    report.add("within_bar", ratio <= BAR)
    anchor = f"real-time playback {result['anchor']:.1f} s"
    report.finish(f"{median:.2f} s request to delivered (median)", anchor, ratio, as_json=args.json)
    return 0


def _hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
