"""RTSP replay of recorded footage (ONVIF Streaming spec, "RTSP replay", as Profile G devices serve it).

A replay URI is ``rtsp://<device>/replay/<recording token>``. PLAY must carry ``Require: onvif-replay`` (else
551 Option not supported) and ``Range: clock=<start>-[<end>]`` (absolute UTC, ``YYYYMMDDTHHMMSS[.fff]Z``);
``Rate-Control: no`` sends as fast as the connection takes, otherwise frames go out at real time (a quirk:
some devices always do). Every RTP packet carries the ONVIF replay header extension (0xABAC): the NTP time
the frame was recorded and the flags C (clean point: keyframe), E (end of a contiguous section), D
(discontinuity: the first packet after a gap) and T (the last packet of the replay).

Playback starts at the keyframe at or before the start (a GOP is one second, camsim/recording.py), skips
what is not recorded (gaps, past retention, the future), and ends at the range end. Faults (camsim/model.py):
``replay_refused`` (403 on DESCRIBE/PLAY), ``replay_stall_after_s`` (goes silent, keeps the connection),
``replay_time_shift_s`` (serves another time than asked, labelled with its true time).
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from camsim.model import CameraSpec
from camsim.recording import Archive, Gop, Recording
from camsim.rtp import NTP_EPOCH_OFFSET, PAYLOAD_TYPE, RTP_CLOCK, fragment, sei_user_data

log = logging.getLogger(__name__)

REPLAY_PREFIX = "/replay/"
_CLOCK = re.compile(r"clock=(\d{8}T\d{6}(?:\.\d+)?Z)-(\d{8}T\d{6}(?:\.\d+)?Z)?")
_INTERLEAVED = struct.Struct(">cBH")
_RTP = struct.Struct(">BBHII")
_EXTENSION = struct.Struct(">HHIIBBH")  # 0xABAC, length 3 words, NTP seconds, NTP fraction, flags, CSeq, pad
FLAG_C, FLAG_E, FLAG_D, FLAG_T = 0x80, 0x40, 0x20, 0x10


def replay_uri(host: str, port: int, token: str) -> str:
    return f"rtsp://{host}:{port}{REPLAY_PREFIX}{token}"


def token_of(path: str) -> str | None:
    return path[len(REPLAY_PREFIX) :] if path.startswith(REPLAY_PREFIX) else None


def parse_clock(text: str) -> float:
    """``YYYYMMDDTHHMMSS[.fff]Z`` as epoch seconds."""
    whole, _, frac = text.rstrip("Z").partition(".")
    moment = calendar.timegm(time.strptime(whole, "%Y%m%dT%H%M%S"))
    return moment + (float(f"0.{frac}") if frac else 0.0)


def format_clock(moment: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


def parse_range(header: str) -> tuple[float, float | None] | None:
    """(start, end or None) of a ``Range: clock=...`` header; None if it is not one."""
    match = _CLOCK.search(header.replace(" ", ""))
    if match is None:
        return None
    try:
        start = parse_clock(match.group(1))
        end = parse_clock(match.group(2)) if match.group(2) else None
    except ValueError:
        return None
    return start, end


@dataclass(frozen=True)
class ReplayPlan:
    """The seconds of footage one PLAY sends, in order (each one GOP), and how."""

    recording: Recording
    seconds: tuple[int, ...]
    paced: bool
    stall_after_s: float | None

    @classmethod
    def make(
        cls, spec: CameraSpec, recording: Recording, start: float, end: float | None, *, now: float,
        rate_control: bool,
    ) -> ReplayPlan:  # fmt: skip
        shift = spec.faults.replay_time_shift_s
        start, stop = start + shift, (end if end is not None else now) + shift
        seconds: list[int] = []
        for a, b in recording.spans(math.floor(start), stop, now):
            seconds.extend(range(math.ceil(a), math.ceil(b)))
        paced = rate_control or spec.personality.replay_ignores_rate_control
        return cls(recording, tuple(seconds), paced, spec.faults.replay_stall_after_s)


class ReplayStreamer:
    """Sends one plan as interleaved RTP with the replay header extension."""

    def __init__(
        self, writer: asyncio.StreamWriter, archive: Archive, plan: ReplayPlan, *, channel: int, cseq: int,
        camera_id: str,
    ) -> None:  # fmt: skip
        self.writer, self.footage, self.plan = writer, archive.footage, plan
        self.channel, self.cseq, self.profile = channel, cseq & 0xFF, archive.profile
        self.ssrc, self.seq = secrets.randbits(32), secrets.randbits(16)
        self.ts0 = secrets.randbits(32)
        self.sei = sei_user_data("h264", f"camsim:{camera_id}")

    def rtp_info(self, url: str) -> str:
        return f"url={url};seq={self.seq};rtptime={self.ts0}"

    async def run(self, clock: Callable[[], float]) -> None:
        """Send every planned second, paced or not; then stay silent until the session ends."""
        plan = self.plan
        if not plan.seconds:
            return
        self.writer.write(self._sender_report(plan.seconds[0]))
        started = clock()
        try:
            for n, second in enumerate(plan.seconds):
                if plan.stall_after_s is not None and n >= plan.stall_after_s:
                    await asyncio.Event().wait()  # silent until the client gives up (the task is cancelled)
                gop = await asyncio.to_thread(self.footage.gop, self.profile, second)
                await self._send_gop(gop, n, started, clock)
        except ConnectionError:
            log.debug("replay of %s: the client went away", plan.recording.token)

    async def _send_gop(self, gop: Gop, n: int, started: float, clock: Callable[[], float]) -> None:
        seconds, fps = self.plan.seconds, self.profile.fps
        second = seconds[n]
        gap_before = n > 0 and seconds[n - 1] != second - 1
        section_ends = n == len(seconds) - 1 or seconds[n + 1] != second + 1
        for index, unit in enumerate(gop.units):
            if self.plan.paced:
                due = started + (second - seconds[0]) + index / fps
                if due > clock():
                    await asyncio.sleep(due - clock())
            flags = (FLAG_C | (FLAG_D if gap_before else 0)) if index == 0 else 0
            if index == len(gop.units) - 1 and section_ends:
                flags |= FLAG_E | (FLAG_T if n == len(seconds) - 1 else 0)
            head = (*self.footage.parameter_sets(self.profile), self.sei) if index == 0 else ()
            self.writer.write(self._packets((*head, *unit.nals), second + index / fps, flags))
            await self.writer.drain()

    def _packets(self, nals: tuple[bytes, ...], recorded: float, flags: int) -> bytes:
        payloads = [p for nal in nals for p in fragment("h264", nal)]
        ts = (self.ts0 + round((recorded - self.plan.seconds[0]) * RTP_CLOCK)) & 0xFFFFFFFF
        ntp = recorded + NTP_EPOCH_OFFSET
        ntp_s, ntp_f = int(ntp) & 0xFFFFFFFF, int((ntp % 1) * (1 << 32)) & 0xFFFFFFFF
        out = bytearray()
        for i, payload in enumerate(payloads):
            last = i == len(payloads) - 1
            packet_flags = (flags & ~(FLAG_E | FLAG_T) if not last else flags) & (~FLAG_D if i else 0xFF)
            header = _RTP.pack(0x90, (0x80 if last else 0) | PAYLOAD_TYPE, self.seq, ts, self.ssrc)
            ext = _EXTENSION.pack(0xABAC, 3, ntp_s, ntp_f, packet_flags, self.cseq, 0)
            self.seq = (self.seq + 1) & 0xFFFF
            out += _INTERLEAVED.pack(b"$", self.channel, len(header) + len(ext) + len(payload))
            out += header + ext + payload
        return bytes(out)

    def _sender_report(self, first: int) -> bytes:
        ntp = first + NTP_EPOCH_OFFSET
        body = struct.pack(">BBHIIIIII", 0x80, 200, 6, self.ssrc, int(ntp) & 0xFFFFFFFF, 0, self.ts0, 0, 0)
        return _INTERLEAVED.pack(b"$", self.channel + 1, len(body)) + body


def find_recording(archive: Archive | None, spec: CameraSpec, token: str) -> Recording | None:
    """The recording ``token`` if device ``spec`` serves it."""
    if archive is None:
        return None
    recording = archive.recordings.get(token)
    return recording if recording is not None and recording in archive.on_device(spec) else None
