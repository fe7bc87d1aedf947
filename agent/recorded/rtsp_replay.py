"""A small blocking RTSP client for ONVIF replay (ONVIF Streaming spec, "RTSP replay"): RTP over TCP.

FFmpeg's RTSP demuxer cannot send ``Require: onvif-replay``, an absolute ``Range: clock=...`` or
``Rate-Control: no``, and it drops the RTP header extension that says when each frame was recorded, so replay
has its own client. What it does: DESCRIBE, SETUP (interleaved TCP), PLAY with those headers (HTTP Digest or
Basic when challenged), then hands out H.264 access units (Annex B) with the recorded time from the ONVIF
replay header extension (0xABAC: NTP time, flags C/E/D/T). Depacketisation: RFC 6184 single NAL unit, STAP-A
and FU-A. Every read has a timeout: a recorder that stalls raises ``ReplayError("stalled")``. H.265 replay is
not handled yet (``ReplayError``).
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from agent.credentials import Credentials
from agent.http_digest import DigestChallenge

NTP_EPOCH_OFFSET = 2_208_988_800
START_CODE = b"\x00\x00\x00\x01"
MAX_RESPONSE_BYTES = 64 * 1024
FLAG_C, FLAG_E, FLAG_D, FLAG_T = 0x80, 0x40, 0x20, 0x10
_SPROP = re.compile(r"sprop-parameter-sets=([A-Za-z0-9+/=,]+)")


class ReplayError(Exception):
    """Replay failed; ``kind``: refused (the recorder said no), unknown (no such recording), stalled, protocol
    (something we cannot read), unreachable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class RecordedFrame:
    """One access unit of a replay, Annex B, with the time it was recorded (epoch seconds, recorder clock)."""

    data: bytes
    recorded: float | None  # None when the recorder sent no replay header extension
    keyframe: bool
    discontinuity: bool  # the first frame after a gap in the recording
    last: bool  # the recorder says the replay ends here (T flag)


def clock_range(start: float, end: float) -> str:
    """The ``Range`` value of an absolute replay window."""

    def fmt(moment: float) -> str:
        return time.strftime("%Y%m%dT%H%M%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"

    return f"clock={fmt(start)}-{fmt(end)}"


@dataclass
class _Unit:
    nals: list[bytes] = field(default_factory=list)
    timestamp: int | None = None
    recorded: float | None = None
    flags: int = 0
    fragment: bytearray | None = None


class ReplaySession:
    """One replay; use as a context manager (TEARDOWN and close on exit)."""

    def __init__(
        self, host: str, port: int, path: str, creds: Credentials | None, *, open_timeout_s: float,
        read_timeout_s: float,
    ) -> None:  # fmt: skip
        self._url = f"rtsp://{host}:{port}{path}"
        self._creds, self._read_timeout_s = creds, read_timeout_s
        try:
            self._sock = socket.create_connection((host, port), timeout=open_timeout_s)
        except OSError as exc:
            raise ReplayError("unreachable", f"recorder RTSP: {type(exc).__name__}") from None
        self._file: BinaryIO = self._sock.makefile("rb")
        self._cseq = 0
        self._session = ""
        self._auth: DigestChallenge | None = None
        self._basic = False
        self.parameter_sets = b""  # SPS and PPS from the SDP (Annex B), for devices that send none in-band

    def __enter__(self) -> ReplaySession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._session:
                self._sock.settimeout(1.0)
                self._send("TEARDOWN", self._url, {"Session": self._session})
        except OSError:
            pass
        finally:
            self._file.close()
            self._sock.close()

    def play(self, start: float, end: float, *, rate_control: bool = False) -> None:
        """DESCRIBE, SETUP and PLAY [start, end) (epoch seconds)."""
        describe = self._request("DESCRIBE", self._url, {"Accept": "application/sdp"})
        sdp = describe.body.decode("utf-8", "replace")
        if "H264" not in sdp:
            raise ReplayError("protocol", "the replay is not H.264")
        self.parameter_sets = _sprop(sdp)
        base = describe.headers.get("content-base", self._url + "/").rstrip("/")
        setup = self._request(
            "SETUP", f"{base}/trackID=0",
            {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1", "Require": "onvif-replay"},
        )  # fmt: skip
        self._session = setup.headers.get("session", "").split(";")[0]
        headers = {"Session": self._session, "Require": "onvif-replay", "Range": clock_range(start, end)}
        headers["Rate-Control"] = "yes" if rate_control else "no"
        self._request("PLAY", self._url, headers)
        self._sock.settimeout(self._read_timeout_s)

    def frames(self) -> Iterator[RecordedFrame]:
        """Access units in order until the connection ends; ReplayError("stalled") when nothing comes."""
        unit = _Unit()
        while True:
            channel, packet = self._next_interleaved()
            if channel != 0 or len(packet) < 12:
                continue  # RTCP, or nothing to read
            done = self._add_packet(unit, packet)
            if done is not None:
                yield done
                unit = _Unit()

    # -- RTP --------------------------------------------------------------------------------------------
    def _add_packet(self, unit: _Unit, packet: bytes) -> RecordedFrame | None:
        first, second = packet[0], packet[1]
        timestamp = struct.unpack_from(">I", packet, 4)[0]
        offset = 12 + 4 * (first & 0x0F)
        flags, recorded = 0, None
        if first & 0x10 and len(packet) >= offset + 4:
            profile, words = struct.unpack_from(">HH", packet, offset)
            if profile == 0xABAC and words >= 3 and len(packet) >= offset + 16:
                ntp_s, ntp_f, flags = struct.unpack_from(">IIB", packet, offset + 4)
                recorded = ntp_s - NTP_EPOCH_OFFSET + ntp_f / 2**32
            offset += 4 + 4 * words
        if unit.timestamp is None:
            unit.timestamp, unit.recorded = timestamp, recorded
        unit.flags |= flags
        _depacketize(unit, packet[offset:])
        if not second & 0x80:  # marker: the last packet of the access unit
            return None
        keyframe = any(nal and nal[0] & 0x1F == 5 for nal in unit.nals)
        data = b"".join(START_CODE + nal for nal in unit.nals)
        return RecordedFrame(
            data, unit.recorded, keyframe, bool(unit.flags & FLAG_D), bool(unit.flags & FLAG_T)
        )

    def _next_interleaved(self) -> tuple[int, bytes]:
        try:
            head = self._file.read(4)
            while head[:1] != b"$":  # an RTSP message in between (a keep-alive answer): skip it
                if not head:
                    raise ReplayError("protocol", "the recorder closed the replay")
                self._skip_message(head)
                head = self._file.read(4)
            size = struct.unpack_from(">H", head, 2)[0]
            body = self._file.read(size)
        except TimeoutError:
            raise ReplayError("stalled", f"no data for {self._read_timeout_s:g} s") from None
        except OSError as exc:
            raise ReplayError("unreachable", f"recorder RTSP: {type(exc).__name__}") from None
        if len(head) < 4 or len(body) < size:
            raise ReplayError("protocol", "the recorder closed the replay")
        return head[1], body

    def _skip_message(self, head: bytes) -> None:
        data = head
        while not data.endswith(b"\r\n\r\n") and len(data) < MAX_RESPONSE_BYTES:
            byte = self._file.read(1)
            if not byte:
                return
            data += byte

    # -- RTSP requests ------------------------------------------------------------------------------------
    def _request(self, method: str, url: str, headers: dict[str, str]) -> _Response:
        response = self._exchange(method, url, headers)
        if response.status == 401 and self._creds is not None and self._auth is None and not self._basic:
            challenge = response.headers.get("www-authenticate", "")
            self._auth = DigestChallenge.parse(challenge)
            self._basic = self._auth is None and challenge.lower().startswith("basic")
            response = self._exchange(method, url, headers)
        if response.status == 200:
            return response
        kind = {401: "refused", 403: "refused", 404: "unknown", 454: "refused", 551: "refused"}
        raise ReplayError(kind.get(response.status, "protocol"), f"{method}: RTSP {response.status}")

    def _exchange(self, method: str, url: str, headers: dict[str, str]) -> _Response:
        try:
            self._send(method, url, headers)
            return self._read_response()
        except TimeoutError:
            raise ReplayError("stalled", f"{method}: no answer") from None
        except OSError as exc:
            raise ReplayError("unreachable", f"{method}: {type(exc).__name__}") from None

    def _send(self, method: str, url: str, headers: dict[str, str]) -> None:
        self._cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self._cseq}", "User-Agent: cctv-agent"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if self._creds is not None and (self._auth is not None or self._basic):
            lines.append(f"Authorization: {self._authorization(method, url)}")
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _authorization(self, method: str, url: str) -> str:
        assert self._creds is not None
        password = self._creds.password.get_secret_value()
        if self._auth is not None:
            return self._auth.authorization(self._creds.username, password, method, url)
        return "Basic " + base64.b64encode(f"{self._creds.username}:{password}".encode()).decode()

    def _read_response(self) -> _Response:
        head = b""
        while True:
            line = self._file.readline(MAX_RESPONSE_BYTES)
            if not line:
                raise ReplayError("protocol", "the recorder closed the connection")
            head += line
            if head.endswith(b"\r\n\r\n") or len(head) > MAX_RESPONSE_BYTES:
                break
        lines = head.decode("utf-8", "replace").split("\r\n")
        parts = lines[0].split(" ")
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {}
        for line_text in lines[1:]:
            name, sep, value = line_text.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        declared = headers.get("content-length", "")
        length = int(declared) if declared.isdigit() else 0
        body = self._file.read(min(length, MAX_RESPONSE_BYTES)) if length else b""
        return _Response(status, headers, body)


@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes


def _sprop(sdp: bytes | str) -> bytes:
    """The SDP's sprop-parameter-sets as Annex B (empty if absent or not base64)."""
    match = _SPROP.search(str(sdp))
    if match is None:
        return b""
    try:
        return b"".join(START_CODE + base64.b64decode(part) for part in match.group(1).split(",") if part)
    except (binascii.Error, ValueError):
        return b""


def _depacketize(unit: _Unit, payload: bytes) -> None:
    """RFC 6184: single NAL unit (1-23), STAP-A (24), FU-A (28)."""
    if not payload:
        return
    kind = payload[0] & 0x1F
    if kind == 24:
        pos = 1
        while pos + 2 <= len(payload):
            size = struct.unpack_from(">H", payload, pos)[0]
            unit.nals.append(payload[pos + 2 : pos + 2 + size])
            pos += 2 + size
    elif kind == 28 and len(payload) >= 2:
        header = payload[1]
        if header & 0x80:
            unit.fragment = bytearray([(payload[0] & 0xE0) | (header & 0x1F)])
        if unit.fragment is not None:
            unit.fragment += payload[2:]
            if header & 0x40:
                unit.nals.append(bytes(unit.fragment))
                unit.fragment = None
    elif 1 <= kind <= 23:
        unit.nals.append(payload)
