"""camsim's recorded footage over RTSP replay (ONVIF Streaming spec): what a Profile G client relies on.
Read with the agent's own replay client; cameras listen on 127.63.2.x."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import pytest
from pydantic import SecretStr

from agent.credentials import Credentials
from agent.recorded.rtsp_replay import RecordedFrame, ReplayError, ReplaySession, clock_range
from camsim.fleet import Fleet, FleetOptions, build_specs
from camsim.font import read_text
from camsim.media import MediaLibrary
from camsim.model import CameraSpec, StreamProfile
from camsim.recording import Archive, clock_text
from tests.services import free_port

PROFILE = StreamProfile("recording", "/replay", "h264", 320, 180, 25, 25, 300)
GAP = (600, 540)  # the camera was down from 10 min ago to 9 min ago


@pytest.fixture
async def camera(tmp_path: Path) -> AsyncIterator[CameraSpec]:
    spec = build_specs(FleetOptions("gangnam", 1, "127.63.2.1", free_port(), free_port()))[0]
    spec.personality = dataclasses.replace(spec.personality, profile_g=True)
    archive = Archive(profile=PROFILE)
    archive.record([spec])
    now = int(archive.clock())
    archive.recordings[f"rec-{spec.camera_id}"].gaps = [(now - GAP[0], now - GAP[1])]
    fleet = Fleet(
        [spec], media=MediaLibrary(tmp_path / "cache", loop_s=4.0), archive=archive, wsd_port=free_port()
    )
    await fleet.start()
    yield spec
    await fleet.stop()


def replay(spec: CameraSpec, start: float, end: float, *, rate_control: bool = False) -> list[RecordedFrame]:
    creds = Credentials(spec.username, SecretStr(spec.password))
    path = f"/replay/rec-{spec.camera_id}"
    with ReplaySession(spec.host, spec.rtsp_port, path, creds, open_timeout_s=2, read_timeout_s=2) as session:
        session.play(start, end, rate_control=rate_control)
        frames = []
        for frame in session.frames():
            frames.append(frame)
            if frame.last:
                return frames
    raise AssertionError("no last frame")


def shown(frame: RecordedFrame) -> str:
    decoder = av.CodecContext.create("h264", "r")
    [picture] = [*decoder.decode(av.Packet(frame.data)), *decoder.decode(None)]
    plane: Any = picture.to_ndarray(format="gray")
    return read_text(plane, PROFILE.height // 50, PROFILE.width // 50, max(1, PROFILE.height // 135), 19)


async def test_replay_sends_the_recorded_window_with_its_recorded_times(camera: CameraSpec) -> None:
    start = float(int(time.time()) - 1200)
    frames = await asyncio.to_thread(replay, camera, start + 0.5, start + 3)
    keyframes = [f for f in frames if f.keyframe]
    assert [f.recorded for f in keyframes] == [
        start,
        start + 1,
        start + 2,
    ]  # from the keyframe before the start
    assert len(frames) == 3 * PROFILE.fps and frames[-1].last
    assert [shown(f) for f in keyframes] == [clock_text(int(start) + s) for s in range(3)]


async def test_a_gap_is_skipped_and_flagged_as_a_discontinuity(camera: CameraSpec) -> None:
    gap_start = float(int(time.time()) - GAP[0])  # may be a second off the archive's: read it from the frames
    frames = await asyncio.to_thread(replay, camera, gap_start - 62, gap_start + 62)
    jumps = [(a, b) for a, b in itertools.pairwise(frames) if b.recorded - a.recorded > 1]  # type: ignore[operator]
    assert len(jumps) == 1
    before, after = jumps[0]
    assert after.discontinuity and after.keyframe and not before.discontinuity
    assert after.recorded - before.recorded == pytest.approx(GAP[0] - GAP[1] + 1 / PROFILE.fps)  # type: ignore[operator]


async def test_rate_control_paces_the_replay_unless_told_not_to(camera: CameraSpec) -> None:
    start = float(int(time.time()) - 900)
    began = time.monotonic()
    await asyncio.to_thread(replay, camera, start, start + 2, rate_control=False)
    fast = time.monotonic() - began
    began = time.monotonic()
    await asyncio.to_thread(replay, camera, start, start + 2, rate_control=True)
    paced = time.monotonic() - began
    assert fast < 0.5 * paced and paced >= 1.9  # as fast as it goes, against real time
    camera.personality = dataclasses.replace(camera.personality, replay_ignores_rate_control=True)
    began = time.monotonic()
    await asyncio.to_thread(replay, camera, start, start + 2, rate_control=False)
    assert time.monotonic() - began >= 1.9  # the quirk: real time whatever the client asks


def play_status(camera: CameraSpec, headers: str) -> int:
    """The status of a raw PLAY of the camera's recording with `headers` (Basic auth, interleaved TCP)."""
    auth = base64.b64encode(f"{camera.username}:{camera.password}".encode()).decode()
    url = f"rtsp://{camera.host}:{camera.rtsp_port}/replay/rec-{camera.camera_id}"
    with socket.create_connection((camera.host, camera.rtsp_port), timeout=2) as sock:
        reader = sock.makefile("rb")

        def ask(method: str, uri: str, extra: str) -> tuple[int, str]:
            sock.sendall(
                f"{method} {uri} RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic {auth}\r\n{extra}\r\n".encode()
            )
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += reader.readline()
            text = head.decode()
            length = next(
                (int(line.split(":")[1]) for line in text.split("\r\n") if line.startswith("Content-Length")),
                0,
            )
            reader.read(length)
            return int(text.split(" ")[1]), text

        ask("DESCRIBE", url, "")
        _, setup = ask("SETUP", url + "/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        session = next(
            line.split(": ")[1].split(";")[0] for line in setup.split("\r\n") if line.startswith("Session")
        )
        return ask("PLAY", url, f"Session: {session}\r\n{headers}")[0]


async def test_replay_requires_onvif_replay_and_a_clock_range(camera: CameraSpec) -> None:
    clock = f"Range: {clock_range(time.time() - 600, time.time() - 599)}\r\n"
    assert await asyncio.to_thread(play_status, camera, clock) == 551  # no Require: onvif-replay
    assert await asyncio.to_thread(play_status, camera, "Require: onvif-replay\r\nRange: npt=0-\r\n") == 457
    camera.faults = dataclasses.replace(camera.faults, replay_refused=True)
    assert await asyncio.to_thread(play_status, camera, f"Require: onvif-replay\r\n{clock}") == 403


async def test_an_unknown_recording_is_not_found(camera: CameraSpec) -> None:
    def play_unknown() -> None:
        creds = Credentials(camera.username, SecretStr(camera.password))
        path = "/replay/rec-nope"
        with ReplaySession(
            camera.host, camera.rtsp_port, path, creds, open_timeout_s=2, read_timeout_s=2
        ) as s:
            s.play(time.time() - 600, time.time() - 599)

    with pytest.raises(ReplayError) as err:
        await asyncio.to_thread(play_unknown)
    assert err.value.kind == "unknown"
