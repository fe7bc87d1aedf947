"""A light RTSP/TCP load client: consumes many streams and checks they keep real time.

``measure_streams(urls, seconds)`` opens every URL with a raw asyncio RTSP client (DESCRIBE with Digest
auth, SETUP interleaved, PLAY), counts bytes, packets and frames, and compares each stream's RTP clock
with the wall clock: a stream keeps real time if, after a warm-up (the first GOP arrives as a burst),
its media time never falls behind the wall clock by more than ``max_lag_s``. It reports its own CPU use
and, given ``server_pid``, the server's (from /proc) per stream. Benchmarks call it; it needs no decoder.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

WARMUP_S = 1.0
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class StreamStats:
    url: str
    error: str = ""
    bytes: int = 0
    packets: int = 0
    frames: int = 0  # RTP packets with the marker bit = access units
    lag_s: float = 0.0  # how far media time fell behind wall time after warm-up, at worst
    _ts0: int | None = None
    _ts: int = 0  # unwrapped RTP timestamp of the last frame
    _raw: int = 0
    _offset0: float | None = None
    _t0: float = 0.0

    def on_frame(self, raw_ts: int, now: float) -> None:
        if self._ts0 is None:
            self._ts0, self._ts, self._raw = raw_ts, raw_ts, raw_ts
        else:
            delta = (raw_ts - self._raw) & 0xFFFFFFFF
            self._ts += delta - (1 << 32) if delta >= 1 << 31 else delta
            self._raw = raw_ts
        self.frames += 1
        if now - self._t0 < WARMUP_S:
            return
        offset = now - (self._ts - (self._ts0 or 0)) / 90_000  # grows when media falls behind the wall clock
        if self._offset0 is None:
            self._offset0 = offset
        self.lag_s = max(self.lag_s, offset - self._offset0)


def _digest(user: str, password: str, method: str, uri: str, challenge: str) -> str:
    params = dict(_CHALLENGE.findall(challenge))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 Digest is MD5

    response = md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:{md5(f'{method}:{uri}')}")
    return f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'


class _Client:
    def __init__(self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parts = urlsplit(url)
        self.user, self.password = unquote(parts.username or ""), unquote(parts.password or "")
        self.url = f"rtsp://{parts.hostname}:{parts.port or 554}{parts.path}"
        self.reader, self.writer = reader, writer
        self.cseq = 0
        self.auth = ""
        self.challenge = ""
        self.session = ""

    async def request(
        self, method: str, uri: str, extra: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str]]:
        for _ in range(2):
            self.cseq += 1
            headers = {"CSeq": str(self.cseq), **(extra or {})}
            if self.challenge:
                headers["Authorization"] = _digest(self.user, self.password, method, uri, self.challenge)
            if self.session:
                headers["Session"] = self.session
            lines = [f"{method} {uri} RTSP/1.0"] + [f"{k}: {v}" for k, v in headers.items()]
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            status, reply = await self._response()
            if status != 401 or self.challenge:
                return status, reply
            self.challenge = reply.get("www-authenticate", "")
        return status, reply

    async def _response(self) -> tuple[int, dict[str, str]]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:]) if k
        }
        if int(headers.get("content-length", "0")):
            await self.reader.readexactly(int(headers["content-length"]))
        return int(lines[0].split(" ")[1]), headers

    async def start(self) -> None:
        status, headers = await self.request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        if status != 200:
            raise ConnectionError(f"DESCRIBE answered {status}")
        track = headers.get("content-base", self.url + "/") + "trackID=0"
        status, headers = await self.request(
            "SETUP", track, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"}
        )
        if status != 200:
            raise ConnectionError(f"SETUP answered {status}")
        self.session = headers.get("session", "").split(";")[0]
        status, _ = await self.request("PLAY", self.url, {"Range": "npt=0.000-"})
        if status != 200:
            raise ConnectionError(f"PLAY answered {status}")

    async def consume(self, stats: StreamStats, until: float) -> None:
        buf = bytearray()
        stats._t0 = time.monotonic()
        while (left := until - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(self.reader.read(262144), left)
            except TimeoutError:
                break
            if not chunk:
                raise ConnectionError("server closed the stream")
            buf += chunk
            now = time.monotonic()
            pos = _parse(buf, stats, now)
            del buf[:pos]


def _parse(buf: bytearray, stats: StreamStats, now: float) -> int:
    """Account for the complete interleaved frames in ``buf``; returns how many bytes were used."""
    pos, end = 0, len(buf)
    while end - pos >= 4:
        if buf[pos] != 0x24:  # an RTSP response in between: skip its head
            stop = buf.find(b"\r\n\r\n", pos)
            if stop < 0:
                break
            pos = stop + 4
            continue
        size = (buf[pos + 2] << 8) | buf[pos + 3]
        if end - pos < 4 + size:
            break
        if buf[pos + 1] % 2 == 0:  # RTP, not RTCP
            stats.packets += 1
            stats.bytes += size
            if buf[pos + 5] & 0x80:
                stats.on_frame(int.from_bytes(buf[pos + 8 : pos + 12], "big"), now)
        pos += 4 + size
    return pos


async def _one(url: str, seconds: float, stats: StreamStats, open_timeout: float) -> None:
    parts = urlsplit(url)
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port or 554, limit=1 << 20), open_timeout
        )
        assert writer is not None
        client = _Client(url, reader, writer)
        await asyncio.wait_for(client.start(), open_timeout)
        await client.consume(stats, time.monotonic() + seconds)
        writer.write(
            f"TEARDOWN {client.url} RTSP/1.0\r\nCSeq: 99\r\nSession: {client.session}\r\n\r\n".encode()
        )
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        stats.error = f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_streams(
    url_list: list[str], seconds: float, *, server_pid: int | None = None, max_lag_s: float = 0.5,
    open_timeout: float = 10.0,
) -> dict[str, Any]:  # fmt: skip
    """Consume every URL for ``seconds``; returns totals, per-stream figures and CPU use."""
    stats = [StreamStats(url) for url in url_list]
    wall0, cpu0 = time.monotonic(), time.process_time()
    server0 = _cpu_seconds(server_pid) if server_pid else 0.0
    await asyncio.gather(*(_one(s.url, seconds, s, open_timeout) for s in stats))
    wall = time.monotonic() - wall0
    ok = [s for s in stats if not s.error]
    result: dict[str, Any] = {
        "streams": len(stats),
        "ok": len(ok),
        "seconds": round(wall, 2),
        "errors": sorted({s.error for s in stats if s.error}),
        "realtime": bool(ok) and len(ok) == len(stats) and all(s.lag_s <= max_lag_s for s in ok),
        "max_lag_s": round(max((s.lag_s for s in ok), default=0.0), 3),
        "fps_mean": round(sum(s.frames for s in ok) / max(1, len(ok)) / seconds, 2),  # incl. the start GOP
        "kbps_mean": round(sum(s.bytes for s in ok) * 8 / 1000 / max(1, len(ok)) / seconds, 1),
        "total_mbps": round(sum(s.bytes for s in ok) * 8 / 1e6 / seconds, 1),
        "client_cpu_pct": round(100 * (time.process_time() - cpu0) / wall, 1),
    }
    if server_pid:
        server_pct = 100 * (_cpu_seconds(server_pid) - server0) / wall
        result["server_cpu_pct"] = round(server_pct, 1)
        result["server_cpu_pct_per_stream"] = round(server_pct / max(1, len(ok)), 3)
    return result
