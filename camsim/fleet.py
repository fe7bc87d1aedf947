"""A district's fleet of simulated cameras in one process.

build_specs() turns positions into CameraSpecs (ids, loopback addresses, MACs, serials, passwords,
vendors and codecs, all deterministic from a seed so the ledger and secrets can be rewritten).
Fleet starts every camera's ONVIF (and RTSP) server plus the WS-Discovery responder, and a supervisor
stops and starts a camera's servers when its faults make it unreachable (offline, scheduled reboot).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import math
import random
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camsim.aio import settle
from camsim.ledger import Position, read_positions
from camsim.model import CameraSpec, Codec, Personality
from camsim.wsdiscovery import WsDiscoveryResponder
from contract.districts import korean_name

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_PASSWORD_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"  # noqa: S105 (no 0/O/1/l)
_JITTER_DEG = 0.0003  # ~30 m: cycled cameras stand near, not on, the original pole
H265_SHARE = 0.10


@dataclass
class FleetOptions:
    district: str  # ASCII slug, e.g. "gangnam"
    cameras: int
    base_ip: str = "127.20.0.1"
    onvif_port: int = 80
    rtsp_port: int = 554
    seed: int = 1
    positions_csv: Path | None = None
    near: tuple[float, float] | None = None  # (lat, lon): the district's positions nearest it, nearest first
    codec: Codec | None = None  # every camera's codec (H.265-only personalities stay H.265); None: the mix


def host_addresses(base_ip: str, count: int) -> list[str]:
    """`count` addresses from base_ip upward, skipping .0 and .255, all inside 127.0.0.0/8."""
    loopback = ipaddress.ip_network("127.0.0.0/8")
    out: list[str] = []
    addr = ipaddress.ip_address(base_ip)
    while len(out) < count:
        if addr not in loopback:
            raise ValueError(f"{count} cameras from {base_ip} run past 127.255.255.254")
        if int(addr) & 0xFF not in (0, 255):
            out.append(str(addr))
        addr += 1
    return out


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


def camera_mac(camera_id: str) -> str:
    """Locally administered unicast MAC (first octet 0x02) derived from the id."""
    return ":".join(f"{b:02x}" for b in (0x02, *_digest("mac", camera_id)[:5]))


def camera_password(seed: int, camera_id: str, length: int = 16) -> str:
    raw = hmac.new(str(seed).encode(), camera_id.encode(), hashlib.sha256).digest()
    return "".join(_PASSWORD_ALPHABET[b % len(_PASSWORD_ALPHABET)] for b in raw[:length])


def place(positions: Sequence[Position], count: int, seed: int) -> list[Position]:
    """First `count` positions in file order; beyond the end, cycle with a small deterministic jitter."""
    if not positions:
        raise ValueError("no positions to place cameras on")
    out = list(positions[:count])
    for i in range(len(out), count):
        base = positions[i % len(positions)]
        rng = random.Random(f"{seed}:jitter:{i}")
        out.append(
            Position(
                round(base.lat + rng.uniform(-_JITTER_DEG, _JITTER_DEG), 6),
                round(base.lon + rng.uniform(-_JITTER_DEG, _JITTER_DEG), 6),
                base.address,
            )
        )
    return out


def nearest_first(positions: Sequence[Position], lat: float, lon: float) -> list[Position]:
    """The positions by distance from (lat, lon); equirectangular, plenty within a city."""
    scale = math.cos(math.radians(lat))
    return sorted(positions, key=lambda p: (p.lat - lat) ** 2 + ((p.lon - lon) * scale) ** 2)


def build_specs(
    opts: FleetOptions, personalities: Sequence[tuple[Personality, float]] = ((Personality(), 1.0),)
) -> list[CameraSpec]:
    """The fleet's specs; `personalities` are (personality, weight) pairs chosen with a seeded random."""
    korean = korean_name(opts.district)
    positions = read_positions(korean, opts.positions_csv)
    if opts.near is not None:
        positions = nearest_first(positions, *opts.near)
    positions = place(positions, opts.cameras, opts.seed)
    hosts = host_addresses(opts.base_ip, opts.cameras)
    rng = random.Random(f"{opts.seed}:fleet")
    choices = [p for p, _ in personalities]
    weights = [w for _, w in personalities]
    specs = []
    for n, (pos, host) in enumerate(zip(positions, hosts, strict=True), start=1):
        camera_id = f"{opts.district}-{n:05d}"
        personality = rng.choices(choices, weights)[0]
        drawn: Codec = "h265" if rng.random() < H265_SHARE else "h264"  # drawn always: the seed's picks stay
        codec = opts.codec or drawn
        specs.append(
            CameraSpec(
                camera_id=camera_id,
                district=opts.district,
                host=host,
                onvif_port=opts.onvif_port,
                rtsp_port=opts.rtsp_port,
                username="admin",
                password=camera_password(opts.seed, camera_id),
                name=f"{korean} CCTV {n:05d}",
                address_text=pos.address,
                lat=pos.lat,
                lon=pos.lon,
                mac=camera_mac(camera_id),
                serial=f"{personality.hardware_id}-{_digest('serial', camera_id).hex()[:10].upper()}",
                codec=codec,
                personality=personality,
            )
        )
    return specs


# Relative shares of the vendor personalities after the default one (roughly the Korean market: domestic
# Hanwha and IDIS next to Hikvision and Dahua); a personality not listed gets OTHER_VENDOR_WEIGHT.
VENDOR_WEIGHTS = {"hikvision": 0.30, "hanwha": 0.25, "dahua": 0.20, "idis": 0.15, "axis": 0.10}
OTHER_VENDOR_WEIGHT = 0.10
DEFAULT_PERSONALITY = "generic"


def personality_mix(
    loaded: Mapping[str, Personality], default_share: float = 0.5
) -> list[tuple[Personality, float]]:
    """(personality, weight) pairs: the default personality takes `default_share` of the fleet, the
    vendors the rest by VENDOR_WEIGHTS, so most cameras are well-behaved and every quirk still shows up."""
    if not loaded:
        return [(Personality(), 1.0)]
    vendors = {n: p for n, p in loaded.items() if n != DEFAULT_PERSONALITY}
    default = loaded.get(DEFAULT_PERSONALITY)
    if default is None or not vendors:
        return [(p, VENDOR_WEIGHTS.get(n, OTHER_VENDOR_WEIGHT)) for n, p in loaded.items()]
    raw = {n: VENDOR_WEIGHTS.get(n, OTHER_VENDOR_WEIGHT) for n in vendors}
    scale = (1 - default_share) / sum(raw.values())
    return [(default, default_share)] + [(vendors[n], w * scale) for n, w in raw.items()]


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one (a camera holds 3+ sockets); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class _Camera:
    spec: CameraSpec
    servers: list[Any]  # OnvifServer, then RtspServer when enabled
    up: bool = False
    busy: bool = False
    transitions: int = 0


@dataclass
class FleetStats:
    started_s: float = 0.0
    transition_errors: int = 0


class Fleet:
    """Runs the servers of all cameras. Lifecycle: start() once, stop() once; faults change in between."""

    def __init__(
        self,
        specs: Sequence[CameraSpec],
        *,
        media: Any = None,
        rtsp: bool = True,
        wsd_port: int = 3702,
        multicast: bool = False,
        supervise_s: float = 0.5,
        chunk: int = 300,
    ) -> None:
        self.specs = list(specs)
        self._by_id = {s.camera_id: s for s in self.specs}
        self._media = media
        self._rtsp = rtsp
        self._supervise_s = supervise_s
        self._chunk = chunk
        self.discovery = WsDiscoveryResponder(self.specs, port=wsd_port, multicast=multicast)
        self._cameras: list[_Camera] = []
        self._cam_by_id: dict[str, _Camera] = {}
        self._kick = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.stats = FleetStats()

    def get(self, camera_id: str) -> CameraSpec | None:
        return self._by_id.get(camera_id)

    def kick(self) -> None:
        """Faults changed: reconcile now instead of at the next tick."""
        self._kick.set()

    def _make_servers(self, spec: CameraSpec) -> list[Any]:
        from camsim.onvif_server import OnvifServer

        snapshot = self._media.snapshot_jpeg if self._media is not None else None
        servers: list[Any] = [OnvifServer(spec, snapshot_jpeg=snapshot)]
        if self._rtsp:
            from camsim.rtsp_server import RtspServer

            servers.append(RtspServer(spec, self._media))
        return servers

    async def start(self, progress: Progress | None = None) -> None:
        t0 = time.monotonic()
        raise_nofile_limit()
        self._cameras = [_Camera(s, self._make_servers(s)) for s in self.specs]
        self._cam_by_id = {c.spec.camera_id: c for c in self._cameras}
        total = len(self._cameras)
        try:
            for i in range(0, total, self._chunk):
                chunk = self._cameras[i : i + self._chunk]
                await settle(self._bring_up(c) for c in chunk if not c.spec.faults.unreachable())
                if progress:
                    progress(min(i + self._chunk, total), total)
            await self.discovery.start()
        except BaseException:
            await self.stop()
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="camsim-supervisor")
        self.stats.started_s = time.monotonic() - t0
        log.info("fleet up: %s cameras in %.2f s", total, self.stats.started_s)

    async def stop(self) -> None:
        """Close every listener. Every camera, not only those up: one caught half-way (a start that failed at
        its second server, a transition cancelled with the supervisor) holds a port too; stopping a server
        that does not listen does nothing."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        try:
            await self.discovery.stop()
        finally:
            for i in range(0, len(self._cameras), self._chunk):
                batch = self._cameras[i : i + self._chunk]
                await asyncio.gather(*(self._take_down(c) for c in batch), return_exceptions=True)

    async def _bring_up(self, cam: _Camera) -> None:
        for server in cam.servers:
            await server.start()
        cam.up = True

    async def _take_down(self, cam: _Camera) -> None:
        cam.up = False
        await settle(server.stop() for server in reversed(cam.servers))

    async def _supervise(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._supervise_s)
            self._kick.clear()
            await self.reconcile()

    async def reconcile(self) -> None:
        """Stop cameras that should be down and start those that should be up."""
        changes = [c for c in self._cameras if not c.busy and c.up == c.spec.faults.unreachable()]
        if changes:
            await asyncio.gather(*(self._transition(c) for c in changes))

    async def _transition(self, cam: _Camera) -> None:
        cam.busy = True
        going_up = not cam.up
        direction = "up" if going_up else "down"
        try:
            await (self._bring_up(cam) if going_up else self._take_down(cam))
            cam.transitions += 1
            log.info("camera %s %s", cam.spec.camera_id, direction)
        except OSError as exc:  # e.g. the port is still held; retried on the next tick
            self.stats.transition_errors += 1
            log.warning("camera %s failed to go %s: %s", cam.spec.camera_id, direction, exc)
            if going_up:
                with contextlib.suppress(Exception):
                    await self._take_down(cam)
        finally:
            cam.busy = False

    def is_up(self, camera_id: str) -> bool:
        cam = self._cam_by_id.get(camera_id)
        return cam is not None and cam.up

    def counters(self) -> dict[str, int | float]:
        requests = sum(int(getattr(c.servers[0], "requests_total", 0)) for c in self._cameras)
        sessions = 0
        for cam in self._cameras:
            if len(cam.servers) > 1:
                value = getattr(cam.servers[1], "sessions", 0)
                sessions += value if isinstance(value, int) else len(value)
        return {
            "cameras": len(self._cameras),
            "cameras_up": sum(1 for c in self._cameras if c.up),
            "onvif_requests_total": requests,
            "rtsp_sessions": sessions,
            "rss_bytes": rss_bytes(),
            "startup_s": round(self.stats.started_s, 3),
            "transition_errors": self.stats.transition_errors,
            **{f"wsd_{k}": v for k, v in self.discovery.counters.items()},
        }
