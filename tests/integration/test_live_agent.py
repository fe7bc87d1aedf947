"""Live view, the agent's side, end to end: signed `cmd/live` commands over the real broker to a running
agent, segments cut from simulated cameras into the real Ceph S3 gateway and announced on MQTT.

What an operator would check: the segments play (init + segments decode) and show the requested camera (its
id in the stream, its burned-in clock at the announced capture time), each is announced only once it is in
the bucket, in sequence; the session stops when asked, at `until`, and fails with a reason when the camera
sends no keyframe; a dropped camera comes back with a new init segment and a discontinuity; a bad command
is refused and nothing is uploaded; a clip of the last seconds is served from pre-roll while the camera has
one RTSP connection. Cameras listen on 127.61.0.x (this module's range).
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from botocore.exceptions import ClientError
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import Agent
from agent.live.settings import LiveSettings
from camsim.fleet import Fleet, FleetOptions, build_specs
from camsim.font import read_text
from camsim.ledger import write_ledger, write_secrets
from camsim.media import MediaLibrary
from contract import topics
from contract.codec import encode
from contract.messages import ClipRequest, LiveRequest
from tests.integration.conftest import assert_documented, clip_agent_settings, eventually, running
from tests.services import CephS3, Mosquitto, free_port
from tests.signed_commands import OTHER_KEY, collector_key_file, signed

pytestmark = pytest.mark.integration

BASE_IP = "127.61.0.1"
FPS, LOOP_S = 25, 4.0
MAIN_W, MAIN_H = 960, 540
CAMERA, SLOW_KEYFRAMES = "gangnam-00001", "gangnam-00002"


@pytest.fixture
async def fleet(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    """Two H.264 cameras: a keyframe a second, and (the second) a keyframe every 4 s."""
    specs = build_specs(FleetOptions("gangnam", 2, BASE_IP, free_port(), free_port()))
    for spec in specs:
        spec.personality = dataclasses.replace(spec.personality, h265_only=False)
        spec.codec, spec.main_size, spec.fps, spec.gop = "h264", (MAIN_W, MAIN_H), FPS, FPS
    specs[1].gop = int(LOOP_S * FPS)
    write_ledger(specs, tmp_path / "ledger.csv")
    write_secrets(specs, tmp_path / "secrets.toml")
    media = MediaLibrary(tmp_path_factory.getbasetemp() / "clip-cache", loop_s=LOOP_S)
    cameras = Fleet(specs, media=media, wsd_port=free_port())
    await cameras.start()
    yield cameras
    await cameras.stop()


class LiveWatcher:
    """A subscriber to the district's topics that checks, as each live segment is announced, that its objects
    are already in the bucket."""

    def __init__(self, port: int, s3: Any, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket
        self.live: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("cctv/v1/gangnam/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        payload = json.loads(message.payload)
        if topics.parse(message.topic).kind == "live":
            payload["_received"] = time.time()
            segment = payload.get("segment")
            if segment is not None:
                payload["_in_bucket"] = self._exists(segment["object_key"]) and self._exists(
                    segment["init_key"]
                )
            with self._lock:
                self.live.append(payload)
        with self._lock:
            self.latest[message.topic] = payload

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True

    def updates(self, session_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [u for u in self.live if u["session_id"] == session_id]

    def segments(self, session_id: str) -> list[dict[str, Any]]:
        return [u["segment"] for u in self.updates(session_id) if u["status"] == "segment"]

    def ended(self, session_id: str) -> dict[str, Any] | None:
        return next((u for u in self.updates(session_id) if u["status"] in ("stopped", "failed", "refused")),
                    None)  # fmt: skip

    def send(self, command: LiveRequest | ClipRequest) -> None:
        delivery = encode(command)
        self.client.publish(delivery.topic, delivery.payload, qos=1)

    async def camera_online(self, *camera_ids: str) -> None:
        def online() -> bool:
            return all((self.latest.get(topics.camera_status("gangnam", c)) or {}).get("state") == "online"
                       for c in camera_ids)  # fmt: skip

        await eventually(online, 20, "cameras online")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def watcher(mosquitto: Mosquitto, s3_bucket: tuple[Any, str]) -> Iterator[LiveWatcher]:
    client, bucket = s3_bucket
    live = LiveWatcher(mosquitto.port, client, bucket)
    yield live
    live.close()


@pytest.fixture
def make_agent(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> Callable[..., Agent]:
    """An agent for the fleet, uploading to the test's bucket; keyword arguments are its `[live]` section."""

    def make(**live: Any) -> Agent:
        settings = clip_agent_settings(
            tmp_path, mosquitto, ceph_s3, s3_bucket[1], "gangnam-live",
            clips={"read_timeout_s": 2.0, "open_timeout_s": 2.0},
            collector_public_keys=[collector_key_file(tmp_path)],
        )  # fmt: skip
        return Agent(settings.model_copy(update={"live": LiveSettings(**live)}))

    return make


def live_request(camera_id: str, action: str = "start", *, session_id: str | None = None, until_s: float = 60,
                 **fields: Any) -> LiveRequest:  # fmt: skip
    now = datetime.now(UTC)
    return LiveRequest.model_validate({
        "district": "gangnam", "session_id": session_id or f"live-{uuid.uuid4().hex[:10]}", "action": action,
        "camera_id": camera_id, "until": now + timedelta(seconds=until_s), "purpose": "suspect on Teheran-ro",
        "agency": "police-112", "incident": "112-2026-000123", "priority": "112", "sent_at": now, **fields,
    })  # fmt: skip


def fetch(s3: Any, bucket: str, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def ffprobe_frames(path: Path) -> int:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    return int(done.stdout.strip())


def loop_index(frame: av.VideoFrame) -> int:
    """The camsim loop frame a picture shows, read from its burned-in clock ``SS.ff``."""
    gray = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
    h, w = gray.shape
    text = read_text(gray, h // 50, w // 50, max(1, h // 135), 5)
    assert text[2] == "." and (text[:2] + text[3:]).isdigit(), f"no clock in the picture: {text!r}"
    return int(text[:2]) * FPS + int(text[3:])


def frames_apart(shown: int, capture_time: float) -> int:
    """How many frames the picture's clock is from `capture_time` (the loop wraps every LOOP_S)."""
    loop = int(LOOP_S * FPS)
    diff = (shown - round(capture_time * FPS)) % loop
    return min(diff, loop - diff)


def sample(agent: Agent, name: str, **labels: str) -> float:
    return agent.metrics.registry.get_sample_value(name, labels) or 0.0


def listing_lag(update: dict[str, Any]) -> float:
    """Seconds from a segment's end (its first frame's capture time + its duration) to its announcement."""
    segment = update["segment"]
    return float(update["_received"] - datetime.fromisoformat(segment["started_at"]).timestamp()
                 - segment["duration_s"])  # fmt: skip


def assert_announced_in_order(watcher: LiveWatcher, session_id: str) -> list[dict[str, Any]]:
    updates = watcher.updates(session_id)
    assert updates[0]["status"] == "started", updates[0]
    segments = watcher.segments(session_id)
    assert [s["sequence"] for s in segments] == list(range(len(segments)))
    assert all(u["_in_bucket"] for u in updates if u["status"] == "segment"), "announced before it was in S3"
    return segments


async def test_a_live_view_plays_the_camera_and_a_clip_of_its_last_seconds_shares_its_connection(
    fleet: Fleet, watcher: LiveWatcher, make_agent: Callable[..., Agent], s3_bucket: tuple[Any, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    s3, bucket = s3_bucket
    agent = make_agent()
    start = live_request(CAMERA, stream="main")
    async with running(agent, timeout_s=30):
        await watcher.camera_online(CAMERA)
        watcher.send(signed(start))
        await eventually(lambda: len(watcher.segments(start.session_id)) >= 3, 15, "three segments")
        # Save the last seconds (as the collector does: an ordinary clip request) while the view runs.
        now = datetime.now(UTC)
        clip = signed(ClipRequest(
            district="gangnam", request_id=f"save-{uuid.uuid4().hex[:8]}", camera_id=CAMERA,
            start=now - timedelta(seconds=2.5), end=now + timedelta(seconds=0.5), purpose="save live range",
            agency="police-112", priority="112", sent_at=now,
        ))  # fmt: skip
        watcher.send(clip)
        result_topic = topics.clip("gangnam", clip.request_id)
        connections = []  # RTSP sessions at the camera while the clip is cut beside the live view

        def clip_done() -> bool:
            connections.append(fleet.counters()["rtsp_sessions"])
            return (watcher.latest.get(result_topic) or {}).get("status") in ("succeeded", "failed")

        await eventually(clip_done, 20, "the clip's result")
        running_views = sample(agent, "cctv_agent_live_sessions")
        watcher.send(signed(live_request(CAMERA, "stop", session_id=start.session_id)))
        await eventually(lambda: watcher.ended(start.session_id) is not None, 10, "the session's end")
        await eventually(lambda: sample(agent, "cctv_agent_live_sessions") == 0, 5, "the view forgotten")

    result = watcher.latest[result_topic]
    assert result["status"] == "succeeded", result
    assert result["source"] == "preroll" and not result.get("reason"), result
    assert set(connections) == {1}, connections  # the clip and the live view share one RTSP connection
    ended = watcher.ended(start.session_id)
    assert ended is not None and (ended["status"], ended["reason"]) == ("stopped", "stopped_by_request")
    segments = assert_announced_in_order(watcher, start.session_id)
    announced = watcher.updates(start.session_id)[1]
    assert_documented("live_update", {k: v for k, v in announced.items() if not k.startswith("_")})
    assert running_views == 1
    assert sample(agent, "cctv_agent_live_segments_total", outcome="uploaded") == len(segments)
    assert sample(agent, "cctv_agent_live_segment_upload_seconds_count") == len(segments)
    assert {s["init_key"] for s in segments} == {f"live/gangnam/{start.session_id}/init-0.mp4"}
    assert not any(s["discontinuity"] for s in segments)
    assert all(
        s["object_key"] == f"live/gangnam/{start.session_id}/{s['sequence']:08d}.m4s" for s in segments
    )

    init = fetch(s3, bucket, segments[0]["init_key"])
    bodies = [fetch(s3, bucket, s["object_key"]) for s in segments]
    assert [len(b) for b in bodies] == [s["size_bytes"] for s in segments]
    assert all(f"camsim:{CAMERA}".encode() in body for body in bodies[:-1])  # the camera's id, each keyframe
    frames = decode(init + b"".join(bodies))
    assert len(frames) == pytest.approx(sum(s["duration_s"] for s in segments) * FPS, abs=1)
    (tmp_path / "live.mp4").write_bytes(init + b"".join(bodies))
    assert ffprobe_frames(tmp_path / "live.mp4") == len(frames)  # a player we did not write agrees
    assert (frames[0].width, frames[0].height) == (MAIN_W, MAIN_H)
    for segment, body in zip(segments, bodies, strict=True):
        first = decode(init + body)[0]  # every segment plays on its own after the init segment
        captured = datetime.fromisoformat(segment["started_at"]).timestamp()
        assert frames_apart(loop_index(first), captured) <= 1, segment  # started_at: the picture's own time
    # Announced within one segment + 0.5 s of the capture of its first frame (the listing budget).
    lags = [listing_lag(u) for u in watcher.updates(start.session_id) if u["status"] == "segment"][:-1]
    assert max(lags) < 0.5, lags


async def test_bad_commands_are_refused_and_a_session_ends_at_until(
    fleet: Fleet, watcher: LiveWatcher, make_agent: Callable[..., Agent], s3_bucket: tuple[Any, str]
) -> None:
    s3, bucket = s3_bucket
    agent = make_agent()
    forged = signed(live_request(CAMERA), OTHER_KEY)
    expired = signed(live_request(CAMERA), ttl_s=-120)
    too_long = signed(live_request(CAMERA, until_s=7200))
    elsewhere = signed(live_request(CAMERA, district="jongno"))  # sent on gangnam's topic: not even answered
    unknown = signed(live_request("gangnam-09999"))
    short = signed(live_request(CAMERA, until_s=2))  # the sub stream, by default
    async with running(agent, timeout_s=30):
        await watcher.camera_online(CAMERA)
        for command in (forged, expired, too_long, unknown):
            watcher.send(command)
        delivery = encode(elsewhere)
        watcher.client.publish(topics.command("gangnam", "live"), delivery.payload, qos=1)
        watcher.send(short)
        await eventually(lambda: len(watcher.updates(short.session_id)) > 0, 5, "started")
        renewal = signed(live_request(CAMERA, "renew", session_id=short.session_id, until_s=4))
        watcher.send(renewal)
        await eventually(lambda: len(watcher.segments(short.session_id)) > 0, 5, "a segment")
        connections = fleet.counters()["rtsp_sessions"]
        await eventually(lambda: watcher.ended(short.session_id) is not None, 15, "the session's end")
        rejected = agent.metrics.registry.get_sample_value(
            "cctv_agent_commands_rejected_total", {"reason": "district_mismatch"}
        )

    refusals = {c.session_id: watcher.ended(c.session_id) for c in (forged, expired, too_long, unknown)}
    assert {sid: (u or {}).get("status") for sid, u in refusals.items()} == dict.fromkeys(refusals, "refused")
    assert [(refusals[c.session_id] or {})["reason"] for c in (forged, expired, too_long, unknown)] == [
        "unknown_key", "command_expired", "until_too_far", "unknown_camera",
    ]  # fmt: skip
    assert watcher.updates(elsewhere.session_id) == [] and rejected == 1
    ended = watcher.ended(short.session_id)
    assert ended is not None and (ended["status"], ended["reason"]) == ("stopped", "expired")
    segments = assert_announced_in_order(watcher, short.session_id)
    assert 2 <= len(segments) <= 6
    assert datetime.fromisoformat(ended["sent_at"]) >= renewal.until  # the renewal moved its end
    # The sub stream and, for a later "save this range", the main stream's pre-roll: one connection each.
    assert connections == 2
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="live/")
    sessions = {obj["Key"].split("/")[2] for obj in listed.get("Contents", [])}
    assert sessions == {short.session_id}  # nothing of a refused command
    first = decode(fetch(s3, bucket, segments[0]["init_key"]) + fetch(s3, bucket, segments[0]["object_key"]))
    assert (first[0].width, first[0].height) == (640, 360)  # the sub stream


async def test_a_dropped_camera_resumes_with_a_new_init_one_without_keyframes_fails_and_shutdown_ends_views(
    fleet: Fleet, watcher: LiveWatcher, make_agent: Callable[..., Agent], s3_bucket: tuple[Any, str]
) -> None:
    s3, bucket = s3_bucket
    agent = make_agent(max_segment_s=2.0)
    dropping, keyless = signed(live_request(CAMERA)), signed(live_request(SLOW_KEYFRAMES))
    async with running(agent, timeout_s=30):
        await watcher.camera_online(CAMERA, SLOW_KEYFRAMES)
        watcher.send(dropping)
        watcher.send(keyless)
        await eventually(lambda: len(watcher.segments(dropping.session_id)) >= 2, 15, "two segments")
        spec = fleet.get(CAMERA)
        assert spec is not None
        spec.faults.offline = True  # the camera goes away (its RTSP connections close) ...
        fleet.kick()
        await eventually(lambda: not fleet.is_up(CAMERA), 5, "camera down")
        spec.faults.offline = False  # ... and comes back
        fleet.kick()

        def resumed() -> bool:
            return any(s["init_key"].endswith("init-1.mp4") for s in watcher.segments(dropping.session_id))

        await eventually(resumed, 20, "segments of the reopened stream")
        await eventually(
            lambda: watcher.ended(keyless.session_id) is not None, 10, "the keyless session's end"
        )
    # The agent stopped (SIGTERM) with the view still running: it says so.
    await eventually(lambda: watcher.ended(dropping.session_id) is not None, 5, "the session's end")

    failed = watcher.ended(keyless.session_id)
    assert failed is not None and (failed["status"], failed["reason"]) == ("failed", "no_keyframe")
    stopped = watcher.ended(dropping.session_id)
    assert stopped is not None and (stopped["status"], stopped["reason"]) == ("stopped", "shutdown")
    segments = assert_announced_in_order(watcher, dropping.session_id)
    after = next(i for i, s in enumerate(segments) if s["init_key"].endswith("init-1.mp4"))
    assert segments[after]["discontinuity"] and not any(s["discontinuity"] for s in segments[:after])
    assert all(s["init_key"].endswith("init-0.mp4") for s in segments[:after])
    gap = datetime.fromisoformat(segments[after]["started_at"]) - datetime.fromisoformat(
        segments[after - 1]["started_at"]
    )
    assert gap.total_seconds() > segments[after - 1]["duration_s"]  # the gap shows in the capture times
    init = fetch(s3, bucket, segments[after]["init_key"])
    assert len(decode(init + fetch(s3, bucket, segments[after]["object_key"]))) > 0
