"""Live view: a frame's capture to its segment listed in the playlist and downloadable, 50 sessions at once.

    python -m bench.live [--quick] [--json]

The real parts, all on this machine: a `cctv-collector run` process, a district agent (`cctv-agent run`, a
process of its own so that its CPU is measured alone), a real Mosquitto, the Ceph S3 gateway, and 50 camsim
cameras of Gangnam (sub stream 640x360 H.264, 25 fps, a keyframe a second: 1 s GOP) served from a child
process. An operator of the Gangnam control room (whose grant covers every Gangnam camera) starts one live
session per camera, sub stream, through the API; each session's playlist is fetched once a second with the
operator's token, as a player reloads it (which also keeps the session alive).
Per segment: its first frame's capture time (`started_at`, which the agent takes from the camera's clock and
the tests check against the burned-in clock) to the moment the collector committed it to the index, i.e. it
is in every playlist fetched from then on, with its object already in the bucket (the agent announces a
segment only after its PUT). Bar: p95 <= 1 GOP + 0.5 s = 1.5 s. Only segments captured after a warm-up count.
Every session keeps up: the median listing latency of its last third against its first third (no growing
lag), and its segment count against the seconds measured. At the end every session's newest segment is
downloaded through its presigned URL, every playlist parses with the `m3u8` package, and `ffprobe` (a player
we did not write) reads one session's playlist URL and finds the H.264 stream. Agent and collector CPU over
the measured window are reported (% of one core).
Glass to glass is estimated as the listing p95 plus the console player's hold-back: hls.js with
`liveSyncDuration: 1.5` (collector/console/static/js/live.js) plays 1.5 s behind the end of the newest listed
segment, i.e. 0.5 s behind its start (the console's browser test measures the real thing). Ratio: that
estimate / the 3 s bar (AWS Kinesis Video Streams HLS: typically 3-5 s).
--quick: 8 cameras, 15 s measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import Report, parser, process_cpu_seconds, serving_child

if TYPE_CHECKING:
    import httpx

    from tests.integration.platform_stack import Stack

BASE_IP = "127.62.1.1"
GOP_S = 1.0
BAR_S = GOP_S + 0.5
LIVE_SYNC_S = 1.5  # the console's hls.js liveSyncDuration: how far behind the newest segment's end it plays
HOLD_BACK_S = LIVE_SYNC_S - GOP_S  # behind the newest segment's start, where the listing latency is measured
GLASS_BAR_S = 3.0
RELOAD_S = 1.0  # a player reloads the playlist once a target duration
CACHE = Path.home() / ".cache" / "camsim"


@dataclass(frozen=True)
class Plan:
    sessions: int
    warmup_s: float
    measure_s: float


FULL, QUICK = Plan(50, 8.0, 40.0), Plan(8, 5.0, 15.0)


# -- camsim child -------------------------------------------------------------------------------------------
def serve(cameras: int, directory: Path) -> None:
    """Child mode: `cameras` Gangnam cameras (H.264, sub 640x360, a keyframe a second) with their ledger and
    secrets in `directory`; print their ids as JSON, stop when stdin closes."""
    from camsim.fleet import Fleet, FleetOptions, build_specs
    from camsim.ledger import write_ledger, write_secrets
    from camsim.media import MediaLibrary
    from tests.services import free_port

    async def run() -> None:
        specs = build_specs(FleetOptions("gangnam", cameras, BASE_IP, free_port(), free_port()))
        for spec in specs:
            spec.codec, spec.main_size, spec.sub_size, spec.fps, spec.gop = (
                "h264",
                (960, 540),
                (640, 360),
                25,
                25,
            )
        write_ledger(specs, directory / "ledger.csv")
        write_secrets(specs, directory / "secrets.toml")
        fleet = Fleet(specs, media=MediaLibrary(CACHE, loop_s=10), wsd_port=free_port())
        await fleet.start()
        print(json.dumps({"cameras": [s.camera_id for s in specs]}), flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
        await fleet.stop()

    asyncio.run(run())


# -- the operator's path ----------------------------------------------------------------------------------
class Announcements:
    """When each segment's announcement reached the broker's subscribers (this process), to split the listing
    latency into the agent's part (segment end -> announced) and the collector's (announced -> listed)."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: dict[tuple[str, int], float] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe("cctv/v1/gangnam/live/+", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: Any) -> None:
        update = json.loads(message.payload)
        if update.get("segment"):
            self.received[(update["session_id"], update["segment"]["sequence"])] = time.time()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Measured:
    listing_s: dict[str, list[tuple[float, float]]]  # session -> [(captured at, listed - captured)]
    agent_s: list[float]  # segment end (capture + duration) -> announcement received
    collector_s: list[float]  # announcement received -> listed
    first_segment_s: list[float]
    agent_cpu_pct: float
    collector_cpu_pct: float
    downloaded: int
    playlists_parsed: int
    ffprobe: str
    discontinuities: int


async def live(plan: Plan, work: Path, cameras: list[str]) -> Measured:
    from tests.integration.platform_stack import cameras_ready, iso, platform_stack, wait_for
    from tests.services import CephS3, Mosquitto

    with CephS3().start(work / "ceph") as ceph, Mosquitto().start(work / "mqtt") as broker:
        stack_dir = work / "stack"
        stack_dir.mkdir()
        async with platform_stack(
            stack_dir, broker, ceph, district="gangnam", ledger=work / "ledger.csv",
            secrets=work / "secrets.toml", health={"stream_interval_s": 600.0}, policy=bench_policy(work),
            agent_process=True,
        ) as stack:  # fmt: skip
            await wait_for(lambda: cameras_ready(stack, len(cameras)), 180, "the cameras online", every_s=0.5)
            operator = stack.auth("gangnam-control", "operator", "operator-bench")
            opened = await stack.api.post("/v1/incidents", headers=operator, json={
                "incident_no": f"gn-bench-{int(time.time())}", "service": "112-video", "type": "crowd",
                "lat": 37.5172, "lon": 127.0473, "occurred_at": iso(time.time() - 30), "radius_m": 1000,
                "purpose": "live view benchmark",
            })  # fmt: skip
            opened.raise_for_status()
            incident = opened.json()["incident"]["incident_id"]
            announcements = Announcements(broker.host, broker.port)
            try:
                return await _watch(
                    stack, operator, incident, cameras[: plan.sessions], plan, heard=announcements
                )
            finally:
                announcements.close()


async def _watch(
    stack: Stack, auth: dict[str, str], incident: str, cameras: list[str], plan: Plan, *, heard: Announcements
) -> Measured:
    import httpx

    from tests.integration.platform_stack import store_url

    started = await asyncio.gather(*(
        stack.api.post(f"/v1/incidents/{incident}/live", headers=auth, json={"camera_id": c}) for c in cameras
    ))  # fmt: skip
    sessions = [r.raise_for_status().json() for r in started]
    stopping = asyncio.Event()
    players = [
        asyncio.create_task(_player(stack, auth, s, i / len(sessions), stopping))
        for i, s in enumerate(sessions)
    ]
    await asyncio.sleep(plan.warmup_s)
    measure_from = time.time()
    cpu_before = _cpu(stack)
    await asyncio.sleep(plan.measure_s)
    cpu_after = _cpu(stack)
    measured_s = time.time() - measure_from
    stopping.set()
    await asyncio.gather(*players)
    async with httpx.AsyncClient(timeout=10) as anyone:
        downloaded, parsed, discontinuities = await _validate(stack, anyone, auth, sessions)
    probed = await _ffprobe(stack, auth, sessions[0])
    for s in sessions:
        await stack.api.post(f"/v1/live/{s['session_id']}/stop", headers=auth)
    listing, first, parts = _from_index(store_url(stack.directory), measure_from, measure_from + measured_s)
    split = [(heard.received[key], listed, end) for key, listed, end in parts if key in heard.received]
    return Measured(
        listing, [at - end for at, _, end in split], [listed - at for at, listed, _ in split], first,
        agent_cpu_pct=100 * (cpu_after[0] - cpu_before[0]) / measured_s,
        collector_cpu_pct=100 * (cpu_after[1] - cpu_before[1]) / measured_s,
        downloaded=downloaded, playlists_parsed=parsed, ffprobe=probed, discontinuities=discontinuities,
    )  # fmt: skip


async def _player(
    stack: Stack, auth: dict[str, str], session: dict[str, Any], phase: float, stop: asyncio.Event
) -> None:
    """Reload the playlist once a second, as a player does (phases spread over the second)."""
    await asyncio.sleep(phase * RELOAD_S)
    while not stop.is_set():
        r = await stack.api.get(session["playlist_url"], headers=auth)
        r.raise_for_status()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RELOAD_S)


async def _validate(
    stack: Stack, anyone: httpx.AsyncClient, auth: dict[str, str], sessions: list[dict[str, Any]]
) -> tuple[int, int, int]:
    """Every playlist parses (m3u8); every session's newest segment downloads through its URL, whole."""
    import m3u8

    downloaded = parsed = discontinuities = 0
    for s in sessions:
        playlist = m3u8.loads((await stack.api.get(s["playlist_url"], headers=auth)).text)
        parsed += playlist.version == 7 and bool(playlist.segments)
        discontinuities += sum(seg.discontinuity for seg in playlist.segments)
        if playlist.segments:
            body = await anyone.get(playlist.segments[-1].uri)
            init = await anyone.get(playlist.segments[-1].init_section.uri)
            downloaded += body.status_code == init.status_code == 200 and len(body.content) > 0
    return downloaded, parsed, discontinuities


async def _ffprobe(stack: Stack, auth: dict[str, str], session: dict[str, Any]) -> str:
    """What ffprobe finds playing the playlist URL (the token as a cookie: see docs/api.md)."""
    url = str(stack.api.base_url).rstrip("/") + session["playlist_url"]
    cookie = f"cctv_token={auth['Authorization'].removeprefix('Bearer ')}; path=/v1/live/"
    probe = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-cookies", cookie, "-show_streams", "-of", "json", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(probe.communicate(), 60)
    if probe.returncode != 0:
        return f"failed: {err.decode(errors='replace')[-200:]}"
    video = json.loads(out)["streams"][0]
    return f"{video['codec_name']} {video['width']}x{video['height']}"


def _cpu(stack: Stack) -> tuple[float, float]:
    assert stack.agent_pid is not None
    return process_cpu_seconds(stack.agent_pid), process_cpu_seconds(stack.collector_pid)


Part = tuple[tuple[str, int], float, float]  # ((session, sequence), listed at, captured until)


def _from_index(
    url: str, since: float, until: float
) -> tuple[dict[str, list[tuple[float, float]]], list[float]]:
    """Per session, (capture, listing latency) of the segments captured in [since, until); and each
    session's start to its first segment listed."""
    from collector.index.store import open_store

    store = open_store(url)
    try:
        with store.reading() as tx:
            rows = tx.query(
                "SELECT session_id, started_at, listed_at, sequence, duration_s FROM live_segments "
                "WHERE started_at >= ? AND started_at < ? ORDER BY session_id, msn",
                (since, until),
            )
            firsts = tx.query(
                "SELECT first_segment_at - created_at FROM live_sessions WHERE first_segment_at IS NOT NULL"
            )
    finally:
        store.close()
    listing: dict[str, list[tuple[float, float]]] = {}
    parts: list[Part] = []
    for session_id, started, listed, sequence, duration in rows:
        listing.setdefault(str(session_id), []).append((float(started), float(listed) - float(started)))
        parts.append(((str(session_id), int(sequence)), float(listed), float(started) + float(duration)))
    return listing, [float(f) for (f,) in firsts], parts


def bench_policy(work: Path) -> Path:
    """The example policy; the Gangnam control room may open 60 live sessions and its players' other
    requests are not throttled."""
    from tests.integration.platform_stack import POLICY

    text = POLICY.read_text(encoding="utf-8")
    section = text.index("[agencies.gangnam-control]")
    end = text.index("\n[", section + 1)
    extra = "rate_per_min = { account = 100000, agency = 100000 }\nlive_max_sessions = 60\n"
    path = work / "policy.toml"
    path.write_text(text[:end] + "\n" + extra + text[end:])
    return path


# -- report -------------------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(out: Report, plan: Plan, m: Measured) -> float:
    latencies = [lat for rows in m.listing_s.values() for _, lat in rows]
    p95 = _percentile(latencies, 0.95)
    growth = [_growth(rows) for rows in m.listing_s.values()]
    counts = [len(rows) for rows in m.listing_s.values()]
    out.add("sessions", plan.sessions)
    out.add("sessions_with_segments", len(m.listing_s))
    out.add("measured_s", plan.measure_s)
    out.add("segments", len(latencies))
    out.add("segments_per_session_min", min(counts) if counts else 0)
    out.add("listing_p50_s", round(statistics.median(latencies), 3))
    out.add("listing_p95_s", round(p95, 3))
    out.add("listing_max_s", round(max(latencies), 3))
    out.add("listing_bar_p95_s", BAR_S)
    out.add("within_bar", p95 <= BAR_S)
    out.add("lag_growth_max_s", round(max(growth), 3))  # last third's median - first third's, worst session
    for name, values in (
        ("agent_segment_end_to_announced", m.agent_s),
        ("collector_announced_to_listed", m.collector_s),
    ):
        out.add(f"{name}_p50_s", round(statistics.median(values), 3))
        out.add(f"{name}_p95_s", round(_percentile(values, 0.95), 3))
    out.add("first_segment_p50_s", round(statistics.median(m.first_segment_s), 3))
    out.add("first_segment_max_s", round(max(m.first_segment_s), 3))
    out.add("agent_cpu_pct_of_core", round(m.agent_cpu_pct, 1))
    out.add("collector_cpu_pct_of_core", round(m.collector_cpu_pct, 1))
    out.add("newest_segments_downloaded", m.downloaded)
    out.add("playlists_parsed_m3u8", m.playlists_parsed)
    out.add("discontinuities_in_final_playlists", m.discontinuities)
    out.add("ffprobe_on_playlist_url", m.ffprobe)
    out.add("player_hold_back_s", HOLD_BACK_S)
    glass = p95 + HOLD_BACK_S
    out.add("glass_to_glass_estimate_s", round(glass, 3))
    return glass


def _growth(rows: list[tuple[float, float]]) -> float:
    third = max(1, len(rows) // 3)
    return statistics.median(lat for _, lat in rows[-third:]) - statistics.median(
        lat for _, lat in rows[:third]
    )


def main(argv: list[str] | None = None) -> int:
    p = parser("live", __doc__ or "")
    p.add_argument("--serve", type=int, help=_hidden())
    p.add_argument("--dir", type=Path, help=_hidden())
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.dir)
        return 0
    plan = QUICK if args.quick else FULL
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per playlist fetch otherwise
    out = Report("live")
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        work = Path(tmp)
        child, served = serving_child(["-m", "bench.live", "--serve", str(plan.sessions), "--dir", str(work)])
        try:
            measured = asyncio.run(live(plan, work, served["cameras"]))
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(30)
    glass = report(out, plan, measured)
    p95 = _percentile([lat for rows in measured.listing_s.values() for _, lat in rows], 0.95)
    out.finish(
        f"glass-to-glass estimate {glass:.2f} s (listing p95 {p95:.2f} s + {HOLD_BACK_S:.1f} s player "
        f"hold-back, {plan.sessions} sessions)",
        f"the {GLASS_BAR_S:.0f} s bar (AWS KVS HLS typically 3-5 s)",
        glass / GLASS_BAR_S,
        as_json=args.json,
    )
    return 0


def _hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
