"""Live view end to end on real parts, as a 112 operator uses it: the collector (`cctv-collector run`), a
district agent, simulated cameras (127.62.0.x), Mosquitto and the Ceph S3 gateway. A session started through
the API plays in `ffmpeg` from the playlist URL, and its pictures are the requested camera's (its id in the
stream) at the time the playlist says (the burned-in clock), listed within the latency bound; a range saved
during the view is a verified evidence clip; and the bad cases: a camera outside the grant, a session of
another account or none, forged and expired commands, a camera that never sends a keyframe, a session nobody
watches, an uplink outage in the middle of a session."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import m3u8
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from camsim.fleet import Fleet, FleetOptions, build_specs
from camsim.font import read_text
from camsim.ledger import write_ledger, write_secrets
from camsim.media import MediaLibrary
from camsim.model import CameraSpec
from collector.commands.signing import CommandSigner
from contract import topics
from contract.codec import encode
from contract.messages import LiveRequest
from tests.faults.test_s3_outage import CuttableProxy
from tests.integration.platform_stack import Stack, cameras_ready, decode, iso, platform_stack, wait_for
from tests.services import CephS3, Mosquitto, free_port

pytestmark = pytest.mark.integration

BASE_IP = "127.62.0.1"
FPS, LOOP_S, SUB = 25, 10.0, (640, 360)
GOP_S = 1.0
LISTING_BOUND_S = GOP_S + 0.5  # capture of a segment's first frame -> listed and downloadable (p95 bar)
POLL_S = 0.05


@pytest.fixture
async def cameras(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[CameraSpec]]:
    """The scene's camera, one 40 m away, one 900 m away (outside a 500 m grant), all with a keyframe a
    second; and one at the scene whose keyframes are 4 s apart (the agent waits at most 2 s: it never sees
    one in time)."""
    specs = build_specs(FleetOptions("gangnam", 4, BASE_IP, free_port(), free_port()))
    for spec in specs:
        spec.personality = dataclasses.replace(spec.personality, h265_only=False)
        spec.codec, spec.main_size, spec.sub_size, spec.fps, spec.gop = "h264", (960, 540), SUB, FPS, FPS
    specs[3].gop, specs[3].lat, specs[3].lon = 4 * FPS, specs[0].lat, specs[0].lon
    write_ledger(specs, tmp_path / "ledger.csv")
    write_secrets(specs, tmp_path / "secrets.toml")
    media = MediaLibrary(tmp_path_factory.getbasetemp() / "live-clip-cache", loop_s=LOOP_S)
    fleet = Fleet(specs, media=media, wsd_port=free_port())
    await fleet.start()
    yield specs
    await fleet.stop()


@pytest.fixture
async def proxy(ceph_s3: CephS3) -> AsyncIterator[CuttableProxy]:
    """The agent's way to the gateway: its uplink, which a test can cut."""
    host, port = ceph_s3.endpoint.removeprefix("http://").rstrip("/").rsplit(":", 1)
    cuttable = CuttableProxy(host, int(port))
    await cuttable.restore()
    yield cuttable
    await cuttable.cut()


@pytest.fixture
async def stack(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, cameras: list[CameraSpec], proxy: CuttableProxy
) -> AsyncIterator[Stack]:
    async with platform_stack(
        tmp_path, mosquitto, ceph_s3, district="gangnam",
        ledger=tmp_path / "ledger.csv", secrets=tmp_path / "secrets.toml",
        live={"idle_stop_s": 4.0, "reaper_interval_s": 0.2, "playlist_per_min": 6000},  # polled at 20/s
        agent_live={"max_segment_s": 2.0},
        agent_s3_endpoint=f"http://127.0.0.1:{proxy.port}",
    ) as running:  # fmt: skip
        await wait_for(lambda: cameras_ready(running, len(cameras)), 30, "the cameras online in the index")
        yield running


class Viewer:
    """A player's view of one session: fetches the playlist every POLL_S with the operator's token (which
    keeps the session alive) and notes when each segment first appeared."""

    def __init__(self, stack: Stack, auth: dict[str, str], session: dict[str, Any]) -> None:
        self.stack, self.auth, self.session = stack, auth, session
        self.first_seen: dict[int, tuple[float, m3u8.Segment]] = {}  # msn -> (seen at, segment)
        self.playlist: m3u8.M3U8 | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Viewer:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _poll(self) -> None:
        while True:
            r = await self.stack.api.get(self.session["playlist_url"], headers=self.auth)
            assert r.status_code == 200, r.text
            seen = time.time()
            self.playlist = m3u8.loads(r.text)
            for n, seg in enumerate(self.playlist.segments):
                self.first_seen.setdefault(self.playlist.media_sequence + n, (seen, seg))
            await asyncio.sleep(POLL_S)

    def listing_s(self) -> list[float]:
        """Per segment: capture of its first frame (its PROGRAM-DATE-TIME) -> first seen in the playlist."""
        return [seen - seg.current_program_date_time.timestamp() for seen, seg in self.first_seen.values()]

    async def segments(self, count: int, timeout_s: float = 15) -> None:
        await wait_for(_true(lambda: len(self.first_seen) >= count), timeout_s, f"{count} segments listed")


async def test_an_operator_watches_a_granted_camera_live_and_saves_a_range(
    stack: Stack, cameras: list[CameraSpec], tmp_path: Path
) -> None:
    police = stack.auth("police-112", "operator", "officer-kim")
    scene, _, far, no_keyframes = cameras
    incident = await _incident(stack, police, scene)

    outside = await _start(stack, police, incident, far.camera_id)
    assert (outside.status_code, outside.json()["error"]["code"]) == (403, "outside_grant")

    started = await _start(stack, police, incident, scene.camera_id)
    assert started.status_code == 201, started.text
    session = started.json()
    async with Viewer(stack, police, session) as viewer:
        await viewer.segments(4)
        ffmpeg_started = time.time()
        copied, frames = await _ffmpeg(stack, police, session, tmp_path, seconds=2)
        assert f"camsim:{scene.camera_id}".encode() in copied  # the requested camera's own stream
        shown = [_clock(frame) for frame in frames]
        assert all((b - a) % int(LOOP_S * FPS) == 1 for a, b in itertools.pairwise(shown)), (
            shown
        )  # it plays on
        assert viewer.playlist is not None
        first = _segment_showing(viewer, shown[0])  # ffmpeg started at the newest segment
        assert ffmpeg_started - first.current_program_date_time.timestamp() <= GOP_S + LISTING_BOUND_S
        listing = sorted(viewer.listing_s())
        assert listing[int(0.95 * (len(listing) - 1))] <= LISTING_BOUND_S + POLL_S, listing

        other = stack.auth("police-112", "operator", "officer-park")
        for auth, sid in ((other, session["session_id"]), (police, "live-00000000000000000000")):
            r = await stack.api.get(f"/v1/live/{sid}/index.m3u8", headers=auth)
            assert (r.status_code, r.json()["error"]["code"]) == (404, "live_session_not_found")

        now = time.time()
        saved = await stack.api.post(f"/v1/live/{session['session_id']}/save", headers=police,
                                     json={"start": iso(now - 4), "end": iso(now - 1)})  # fmt: skip
        assert saved.status_code == 201, saved.text
        clip = await wait_for(lambda: _clip_done(stack, police, saved.json()["clip_id"]), 20, "the clip", 0.5)
        assert (clip["state"], clip["manifest_verified"], clip["source"]) == ("succeeded", True, "preroll"), (
            clip
        )
        async with httpx.AsyncClient(timeout=10) as anyone:
            played, duration = decode((await anyone.get(clip["playback"]["url"])).content)
        assert played > 0 and duration == pytest.approx(3, abs=1.1)

        stopped = await stack.api.post(f"/v1/live/{session['session_id']}/stop", headers=police)
        assert (stopped.json()["state"], stopped.json()["stop_reason"]) == ("stopped", "stopped_by_request")
        await wait_for(
            _true(lambda: bool(viewer.playlist and viewer.playlist.is_endlist)), 5, "the playlist's end"
        )

    dark = (await _start(stack, police, incident, no_keyframes.camera_id)).json()
    async with Viewer(stack, police, dark):  # watched: it must end for its own reason
        ended = await wait_for(lambda: _ended(stack, police, dark), 20, "the no-keyframe session's end", 0.5)
    assert ended["stop_reason"] == "no_keyframe", ended
    final = await stack.api.get(dark["playlist_url"], headers=police)
    assert m3u8.loads(final.text).is_endlist  # the player is told it ended (what came before may stay listed)

    records = await _audit(stack, incident)
    done = [(r["action"], r["result"], r["code"]) for r in records if r["action"].startswith("live")]
    assert ("live", "refused", "outside_grant") in done
    assert [a for a, result, _ in done if result == "allowed"] == [
        "live.start",
        "live.save",
        "live.stop",
        "live.start",
    ]


async def test_forged_and_expired_live_commands_are_refused_by_the_agent(
    stack: Stack, cameras: list[CameraSpec], mosquitto: Mosquitto
) -> None:
    answers: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: answers.append(json.loads(m.payload))
    client.connect(mosquitto.host, mosquitto.port)
    client.subscribe(topics.live_filter("gangnam"), qos=1)
    client.loop_start()
    try:
        now = time.time()
        forged = CommandSigner(stack.directory / "someone-else.key", 600).sign(_command(cameras[0], now))
        expired = CommandSigner(stack.directory / "commands.key", 60, clock=lambda: now - 3600).sign(
            _command(cameras[0], now)
        )
        for command in (forged, expired):
            delivery = encode(command)
            client.publish(delivery.topic, delivery.payload, qos=1).wait_for_publish(5)
        sessions = {forged.session_id, expired.session_id}
        await wait_for(
            _true(lambda: {a["session_id"] for a in answers} >= sessions), 10, "the agent's answers"
        )
    finally:
        client.loop_stop()
        client.disconnect()
    assert {a["session_id"]: a["status"] for a in answers} == {s: "refused" for s in sessions}, answers
    for sid in sessions:
        listed = stack.s3.list_objects_v2(Bucket=stack.clip_bucket, Prefix=f"live/gangnam/{sid}/")
        assert listed.get("KeyCount", 0) == 0  # nothing captured, nothing uploaded


async def test_a_session_nobody_watches_ends_and_an_uplink_outage_shows_as_it_was(
    stack: Stack, cameras: list[CameraSpec], proxy: CuttableProxy
) -> None:
    police = stack.auth("police-112", "operator", "officer-kim")
    scene, near, *_ = cameras
    incident = await _incident(stack, police, scene)
    unwatched = (await _start(stack, police, incident, near.camera_id)).json()
    watched = (await _start(stack, police, incident, scene.camera_id)).json()
    async with Viewer(stack, police, watched) as viewer:
        await viewer.segments(2)
        await proxy.cut()
        cut_at = time.time()
        await asyncio.sleep(3.0)  # the uplink is down for 3 s: segments wait at the agent, in order
        await proxy.restore()
        restored_at = time.time()
        idle = await wait_for(
            lambda: _ended(stack, police, unwatched), 10, "the unwatched session's end", 0.5
        )
        await wait_for(
            _true(lambda: _captured_after(viewer, restored_at + 1)), 15, "segments after the outage"
        )
    assert idle["stop_reason"] == "idle"
    seen = sorted(viewer.first_seen.items())
    assert [msn for msn, _ in seen] == list(range(seen[0][0], seen[0][0] + len(seen)))  # each listed once
    starts = [seg.current_program_date_time.timestamp() for _, (_, seg) in seen]
    assert starts == sorted(starts)  # in capture order
    during = [
        (at, seg)
        for _, (at, seg) in seen
        if cut_at + 0.5 < seg.current_program_date_time.timestamp() < restored_at - 1.5
    ]
    assert during, "no segment was captured during the outage"
    # What was captured during the outage waited at the agent and is listed after it, in order, with its true
    # capture time (a player and the operator see how old it is: nothing is passed off as live); nothing was
    # lost, so the timeline has no gap and no discontinuity.
    assert all(at >= restored_at for at, _ in during), (cut_at, restored_at, during)
    assert all(b - a == pytest.approx(GOP_S, abs=0.1) for a, b in itertools.pairwise(starts)), starts
    assert not any(seg.discontinuity for _, (_, seg) in seen)


# -- helpers -------------------------------------------------------------------------------------------------
async def _incident(stack: Stack, auth: dict[str, str], scene: CameraSpec) -> str:
    opened = await stack.api.post("/v1/incidents", headers=auth, json={
        "incident_no": f"112-2026-{uuid.uuid4().hex[:8]}", "service": "112-video", "type": "robbery",
        "lat": scene.lat, "lon": scene.lon, "occurred_at": iso(time.time() - 60), "radius_m": 500,
        "purpose": "follow the suspect",
    })  # fmt: skip
    assert opened.status_code == 201, opened.text
    incident: str = opened.json()["incident"]["incident_id"]
    return incident


async def _start(stack: Stack, auth: dict[str, str], incident: str, camera_id: str) -> httpx.Response:
    return await stack.api.post(f"/v1/incidents/{incident}/live", headers=auth, json={"camera_id": camera_id})


async def _ffmpeg(
    stack: Stack, auth: dict[str, str], session: dict[str, Any], directory: Path, seconds: float
) -> tuple[bytes, list[np.ndarray]]:
    """`ffmpeg` plays the playlist URL from its newest segment: the stream as received (copied) and
    `seconds` of decoded pictures (grey). The token goes in a cookie scoped to the API's live path: ffmpeg
    sends `-headers` to the presigned segment URLs too, which S3 refuses."""
    url = str(stack.api.base_url).rstrip("/") + session["playlist_url"]
    token = auth["Authorization"].removeprefix("Bearer ")
    cookie = f"cctv_token={token}; path=/v1/live/"  # ffmpeg 5.1 sends none with a domain that is an IP
    copied, raw = directory / "live.ts", directory / "live.gray"
    count = str(int(seconds * FPS))
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-cookies", cookie, "-live_start_index", "-1", "-i", url,
        "-map", "0:v:0", "-frames:v", count, "-c", "copy", str(copied),
        "-map", "0:v:0", "-frames:v", count, "-f", "rawvideo", "-pix_fmt", "gray", str(raw),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode(errors="replace")
    w, h = SUB
    pictures = np.frombuffer(raw.read_bytes(), dtype=np.uint8).reshape(-1, h, w)
    return copied.read_bytes(), list(pictures)


def _clock(picture: np.ndarray) -> int:
    """The camsim loop frame a picture shows (its burned-in clock ``SS.ff``)."""
    h, w = picture.shape
    text = read_text(picture, h // 50, w // 50, max(1, h // 135), 5)
    assert text[2] == "." and (text[:2] + text[3:]).isdigit(), f"no clock in the picture: {text!r}"
    return int(text[:2]) * FPS + int(text[3:])


def _segment_showing(viewer: Viewer, loop_frame: int) -> m3u8.Segment:
    """The listed segment whose capture time (PROGRAM-DATE-TIME) is the picture's clock (within a frame)."""
    loop = int(LOOP_S * FPS)
    for _, seg in viewer.first_seen.values():
        diff = (loop_frame - round(seg.current_program_date_time.timestamp() * FPS)) % loop
        if min(diff, loop - diff) <= 1:
            return seg
    raise AssertionError(f"no listed segment starts at loop frame {loop_frame}")


def _captured_after(viewer: Viewer, at: float) -> bool:
    return any(seg.current_program_date_time.timestamp() > at for _, seg in viewer.first_seen.values())


async def _clip_done(stack: Stack, auth: dict[str, str], clip_id: str) -> dict[str, Any] | None:
    clip: dict[str, Any] = (await stack.api.get(f"/v1/clips/{clip_id}", headers=auth)).json()
    return clip if clip["state"] in ("succeeded", "failed") else None


async def _ended(stack: Stack, auth: dict[str, str], session: dict[str, Any]) -> dict[str, Any] | None:
    shown: dict[str, Any] = (await stack.api.get(f"/v1/live/{session['session_id']}", headers=auth)).json()
    return shown if shown["state"] == "stopped" else None


async def _audit(stack: Stack, incident: str) -> list[dict[str, Any]]:
    auditor = stack.auth("audit-office", "auditor", "auditor-lee")
    trail = await stack.api.get("/v1/audit", params={"limit": 1000}, headers=auditor)
    assert trail.status_code == 200, trail.text
    return [e["record"] for e in trail.json()["entries"] if e["record"]["incident"] == incident]


def _command(camera: CameraSpec, now: float) -> LiveRequest:
    return LiveRequest(
        district="gangnam", session_id=f"live-{uuid.uuid4().hex[:12]}", action="start",
        camera_id=camera.camera_id,
        until=datetime.fromtimestamp(now + 60, UTC), purpose="not from the collector", agency="police-112",
        priority="112", sent_at=datetime.fromtimestamp(now, UTC) - timedelta(seconds=1),
    )  # fmt: skip


def _true(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped
