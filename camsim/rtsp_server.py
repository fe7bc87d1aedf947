"""RTSP 1.0 server of one simulated camera: RTP over TCP (interleaved) only, pre-encoded loops, Digest auth.

Methods: OPTIONS, DESCRIBE, SETUP (UDP transports get 461, so ffmpeg falls back to TCP), PLAY, TEARDOWN,
GET_PARAMETER/SET_PARAMETER (keep-alive). One task reads a connection's requests and one task per
playing session sends RTP, paced against the event loop's monotonic clock.

Playback starts at the loop position that matches the camera clock (real clock + ``clock_skew_s``), from
the last keyframe before it: that GOP is sent at once with back-dated timestamps (like a server's GOP
cache), so a client decodes immediately and the burned-in clock matches the RTP/RTCP wall-clock mapping.
An RTCP sender report (NTP = camera clock) goes out right after PLAY and every SR_INTERVAL_S.
Faults honoured: hang, unreachable (offline/rebooting), wrong_credentials, latency_ms (before each
answer), image (clip variant, chosen at DESCRIBE/PLAY), stream_stop_after_s (goes silent, keeps TCP open).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from camsim import replay
from camsim.media import EncodedClip, MediaLibrary
from camsim.model import CameraSpec, StreamProfile, stream_profiles
from camsim.recording import Archive, Recording
from camsim.rtp import RTP_CLOCK, PacketizedClip, Stamper, build_template, packetize, sdp_media, sei_user_data

log = logging.getLogger(__name__)

REQUIRE_AUTH = True  # like real cameras; a personality with auth "none" streams without credentials
REALM = "CamSim"
SESSION_TIMEOUT_S = 60
SR_INTERVAL_S = 2.0
PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
_AUTH_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
_REASONS = {
    200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 454: "Session Not Found",
    455: "Method Not Valid in This State", 457: "Invalid Range", 461: "Unsupported Transport",
    501: "Not Implemented", 551: "Option not supported",
}  # fmt: skip


@dataclass
class Request:
    method: str
    uri: str
    headers: dict[str, str]  # lower-case names

    @property
    def path(self) -> str:
        path = urlsplit(self.uri).path.rstrip("/")
        return path.removesuffix("/trackID=0").rstrip("/") or "/"


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def encode(self, cseq: str) -> bytes:
        lines = [
            f"RTSP/1.0 {self.status} {_REASONS.get(self.status, 'Error')}",
            f"CSeq: {cseq}",
            "Server: CamSim",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.body:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


async def read_request(reader: asyncio.StreamReader) -> Request:
    """The next RTSP request, skipping interleaved frames (client RTCP); IncompleteReadError at EOF."""
    first = await reader.readexactly(1)
    while first == b"$":
        header = await reader.readexactly(3)
        await reader.readexactly(int.from_bytes(header[1:3], "big"))
        first = await reader.readexactly(1)
    head = (first + await reader.readuntil(b"\r\n\r\n")).decode("utf-8", "replace")
    lines = head.split("\r\n")
    method, uri, *_ = [*lines[0].split(" "), "", ""]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if int(headers.get("content-length", "0") or 0):
        await reader.readexactly(int(headers["content-length"]))
    return Request(method.upper(), uri, headers)


class RtspServer:
    """RTSP endpoint of one camera on ``spec.host:spec.rtsp_port`` (port 0 picks one: see ``port``)."""

    def __init__(
        self, spec: CameraSpec, media: MediaLibrary, *, clock: Callable[[], float] = time.time,
        archive: Archive | None = None,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.media = media
        self.archive = archive  # recorded footage, for a device that serves Profile G replay
        self.clock = clock
        self.port = spec.rtsp_port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._sessions = 0

    @property
    def sessions(self) -> int:
        return self._sessions

    def camera_time(self) -> float:
        return self.clock() + self.spec.faults.clock_skew_s

    def profile(self, path: str) -> StreamProfile | None:
        return next((p for p in stream_profiles(self.spec) if p.path == path), None)

    def recording(self, path: str) -> Recording | None:
        """The recording a replay path names, if this device serves it."""
        token = replay.token_of(path)
        return None if token is None else replay.find_recording(self.archive, self.spec, token)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connect, self.spec.host, self.spec.rtsp_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.spec.faults.unreachable():
            writer.transport.abort()
            return
        connection = _Connection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    def session_opened(self) -> None:
        self._sessions += 1

    def session_closed(self) -> None:
        self._sessions -= 1


class _Connection:
    """One client connection: its requests, its (single) session and the task streaming it."""

    def __init__(
        self, server: RtspServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server, self.spec = server, server.spec
        self.reader, self.writer = reader, writer
        self.nonce = secrets.token_hex(16)
        self.authenticated = False
        self.session_id = ""
        self.profile: StreamProfile | None = None
        self.setup_uri = ""
        self.channel = 0
        self.player: asyncio.Task[None] | None = None
        self.recording: Recording | None = None  # set up for replay (camsim/replay.py)

    async def run(self) -> None:
        try:
            if self.spec.faults.hang:
                while await self.reader.read(65536):
                    pass  # accept and read, never answer
                return
            while not self.writer.is_closing():
                request = await read_request(self.reader)
                if self.spec.faults.latency_ms:
                    await asyncio.sleep(self.spec.faults.latency_ms / 1000)
                response = await self.handle(request)
                self.writer.write(response.encode(request.headers.get("cseq", "0")))
                await self.writer.drain()
                if request.method == "TEARDOWN":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self.close()

    def _player_ended(self, task: asyncio.Task[None]) -> None:
        """A streaming task that fails must not go silent: log it and close the session."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("RTSP streaming failed: %r", task.exception(), extra={"camera": self.spec.camera_id})
        self.close()

    def close(self) -> None:
        if self.player is not None:
            self.player.cancel()
            self.player = None
        if self.session_id:
            self.session_id = ""
            self.server.session_closed()
        self.writer.close()

    async def handle(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(200, {"Public": PUBLIC})
        if not self.authorize(request):
            return Response(401, {"WWW-Authenticate": f'Digest realm="{REALM}", nonce="{self.nonce}"'})
        handler = {
            "DESCRIBE": self.describe,
            "SETUP": self.setup,
            "PLAY": self.play,
            "TEARDOWN": self.teardown,
        }
        if request.method in ("GET_PARAMETER", "SET_PARAMETER"):
            return Response(200, self.session_header())
        if request.method not in handler:
            return Response(501)
        return await handler[request.method](request)

    def authorize(self, request: Request) -> bool:
        spec = self.spec
        if spec.faults.wrong_credentials:
            return False
        header = request.headers.get("authorization", "")
        if self.authenticated or (not header and not (REQUIRE_AUTH and spec.personality.auth != "none")):
            return True
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                self.authenticated = base64.b64decode(value).decode() == f"{spec.username}:{spec.password}"
        elif scheme.lower() == "digest":
            self.authenticated = self._digest_ok(request.method, value)
        return self.authenticated

    def _digest_ok(self, method: str, value: str) -> bool:
        params = {m[0].lower(): m[1] or m[2] for m in _AUTH_PARAM.findall(value)}
        if params.get("username") != self.spec.username or params.get("nonce") != self.nonce:
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 Digest is MD5

        ha1 = md5(f"{self.spec.username}:{params.get('realm', REALM)}:{self.spec.password}")
        ha2 = md5(f"{method}:{params.get('uri', '')}")
        if params.get("qop"):
            expected = md5(
                f"{ha1}:{self.nonce}:{params.get('nc')}:{params.get('cnonce')}:{params['qop']}:{ha2}"
            )
        else:
            expected = md5(f"{ha1}:{self.nonce}:{ha2}")
        return secrets.compare_digest(expected, params.get("response", ""))

    def session_header(self) -> dict[str, str]:
        return {"Session": f"{self.session_id};timeout={SESSION_TIMEOUT_S}"} if self.session_id else {}

    async def _clip(self, profile: StreamProfile) -> EncodedClip:
        return await asyncio.to_thread(self.server.media.clip, profile, self.spec.faults.image)

    async def describe(self, request: Request) -> Response:
        if replay.token_of(request.path) is not None:
            return self.describe_replay(request)
        profile = self.server.profile(request.path)
        if profile is None:
            return Response(404)
        clip = await self._clip(profile)
        base = f"rtsp://{self.spec.host}:{self.server.port}{profile.path}/"
        session = [
            "v=0", f"o=- {secrets.randbits(32)} 1 IN IP4 {self.spec.host}", f"s={self.spec.name or 'CamSim'}",
            "c=IN IP4 0.0.0.0", "t=0 0", "a=control:*", "a=range:npt=now-",
        ]  # fmt: skip
        sdp = "\r\n".join(session + sdp_media(clip, "trackID=0")) + "\r\n"
        headers = {"Content-Base": base, "Content-Type": "application/sdp"}
        return Response(200, headers, sdp.encode())

    async def setup(self, request: Request) -> Response:
        recording = self.server.recording(request.path)
        archive = self.server.archive
        profile = archive.profile if recording and archive else self.server.profile(request.path)
        if profile is None:
            return Response(404)
        self.recording = recording
        transport = request.headers.get("transport", "")
        if "TCP" not in transport.upper():
            return Response(461)
        match = re.search(r"interleaved=(\d+)", transport)
        self.channel = int(match.group(1)) if match else 0
        if self.session_id and self.profile != profile:
            return Response(455)
        self.profile, self.setup_uri = profile, request.uri
        if not self.session_id:
            self.session_id = secrets.token_hex(8)
            self.server.session_opened()
        reply = f"RTP/AVP/TCP;unicast;interleaved={self.channel}-{self.channel + 1}"
        return Response(200, {"Transport": reply, **self.session_header()})

    async def play(self, request: Request) -> Response:
        if not self.session_id or self.profile is None:
            return Response(454)
        if self.recording is not None:
            return self.play_replay(request, self.recording)
        if self.player is not None:
            return Response(200, {"Range": "npt=now-", **self.session_header()})
        clip = packetize(await self._clip(self.profile))
        plan = _Plan.start(clip, self.server.camera_time(), asyncio.get_running_loop().time())
        stamper = Stamper(secrets.randbits(32), secrets.randbits(16), self.channel)
        info = f"url={self.setup_uri};seq={stamper.seq};rtptime={plan.timestamp(plan.first_frame)}"
        self.player = asyncio.create_task(self.stream(clip, plan, stamper))
        self.player.add_done_callback(self._player_ended)
        return Response(200, {"Range": "npt=now-", "RTP-Info": info, **self.session_header()})

    def describe_replay(self, request: Request) -> Response:
        archive, recording = self.server.archive, self.server.recording(request.path)
        if self.spec.faults.replay_refused:
            return Response(403)
        if archive is None or recording is None:
            return Response(404)
        clip = EncodedClip(archive.profile, "none", 1.0, archive.footage.parameter_sets(archive.profile), ())
        base = f"rtsp://{self.spec.host}:{self.server.port}{request.path}/"
        session = [
            "v=0", f"o=- {secrets.randbits(32)} 1 IN IP4 {self.spec.host}", f"s={recording.name}",
            "c=IN IP4 0.0.0.0", "t=0 0", "a=control:*",
        ]  # fmt: skip
        sdp = "\r\n".join(session + sdp_media(clip, "trackID=0")) + "\r\n"
        return Response(200, {"Content-Base": base, "Content-Type": "application/sdp"}, sdp.encode())

    def play_replay(self, request: Request, recording: Recording) -> Response:
        if "onvif-replay" not in request.headers.get("require", ""):
            return Response(551, {"Unsupported": request.headers.get("require", "")})
        if self.spec.faults.replay_refused:
            return Response(403)
        span = replay.parse_range(request.headers.get("range", ""))
        if span is None or self.server.archive is None:
            return Response(457)
        rate_control = request.headers.get("rate-control", "yes").strip().lower() != "no"
        plan = replay.ReplayPlan.make(
            self.spec, recording, span[0], span[1], now=self.server.camera_time(), rate_control=rate_control
        )
        if self.player is not None:  # a new PLAY repositions the replay
            self.player.cancel()
        streamer = replay.ReplayStreamer(
            self.writer, self.server.archive, plan, channel=self.channel,
            cseq=_number(request.headers.get("cseq", "")), camera_id=recording.source_id,
        )  # fmt: skip
        self.player = asyncio.create_task(streamer.run(asyncio.get_running_loop().time))
        self.player.add_done_callback(self._player_ended)
        first = plan.seconds[0] if plan.seconds else span[0]
        info = streamer.rtp_info(self.setup_uri)
        headers = {"Range": f"clock={replay.format_clock(first)}-", "RTP-Info": info}
        return Response(200, headers | self.session_header())

    async def teardown(self, request: Request) -> Response:
        return Response(200, self.session_header())

    async def stream(self, clip: PacketizedClip, plan: _Plan, stamper: Stamper) -> None:
        """Send frames at their due time, bursting the back-dated start GOP; RTCP SR every SR_INTERVAL_S."""
        loop = asyncio.get_running_loop()
        stop_after = self.spec.faults.stream_stop_after_s
        stop_at = plan.mono0 + stop_after if stop_after is not None else float("inf")
        sei = build_template(
            [sei_user_data(clip.clip.profile.codec, f"camsim:{self.spec.camera_id}")], marker=False
        )
        frames = clip.clip.frames
        writer = self.writer
        next_sr = plan.mono0
        frame = plan.first_frame
        try:
            while not writer.is_closing():
                due = plan.due(frame)
                now = loop.time()
                if max(now, due) >= stop_at:
                    log.info("camera %s: stream stops (fault) after %.1f s", self.spec.camera_id, stop_after)
                    return
                if due > now:
                    await asyncio.sleep(due - now)
                    now = loop.time()
                if now >= next_sr:
                    camera_now = plan.camera0 + (now - plan.mono0)
                    writer.write(stamper.sender_report(camera_now, plan.timestamp_at(camera_now)))
                    next_sr = now + SR_INTERVAL_S
                index = frame % frames
                unit = clip.units[index]
                parts = (clip.parameter_sets, sei, unit) if clip.clip.units[index].keyframe else (unit,)
                writer.write(stamper.stamp(parts, plan.timestamp(frame)))
                await writer.drain()
                frame += 1
        except ConnectionError:
            log.debug(
                "camera %s: client went away after %d frames", self.spec.camera_id, frame - plan.first_frame
            )


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class _Plan:
    """Maps absolute frame numbers (camera time x fps) to RTP timestamps and monotonic due times."""

    fps: int
    camera0: float  # camera clock at PLAY
    mono0: float  # event-loop clock at PLAY
    first_frame: int
    ts_offset: int

    @classmethod
    def start(cls, clip: PacketizedClip, camera_now: float, mono_now: float) -> _Plan:
        fps = clip.clip.profile.fps
        current = int(camera_now * fps)
        index = current % clip.clip.frames
        first = current - (index - clip.keyframe_at_or_before[index])
        return cls(fps, camera_now, mono_now, first, secrets.randbits(32))

    def timestamp(self, frame: int) -> int:
        return (self.ts_offset + frame * RTP_CLOCK // self.fps) & 0xFFFFFFFF

    def timestamp_at(self, camera_time: float) -> int:
        return (self.ts_offset + round(camera_time * RTP_CLOCK)) & 0xFFFFFFFF

    def due(self, frame: int) -> float:
        return self.mono0 + frame / self.fps - self.camera0
