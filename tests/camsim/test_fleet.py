"""The fleet: specs from the positions CSV, ledger and secrets, offline/reboot supervision, scenarios, CLI."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from camsim.cli import main
from camsim.fleet import Fleet, FleetOptions, build_specs, host_addresses, personality_mix
from camsim.ledger import (
    BUNDLED_POSITIONS,
    LEDGER_COLUMNS,
    read_ledger,
    read_positions,
    write_ledger,
    write_secrets,
)
from camsim.media import MediaLibrary
from camsim.model import CameraSpec, Personality
from camsim.personalities import load_personalities
from camsim.probe import probe_unicast
from camsim.scenario import apply_scenario, load_scenario, select_cameras
from contract.districts import DISTRICTS, korean_name, slug_for

ROOT = Path(__file__).resolve().parents[2]
ONVIF_PORT, RTSP_PORT, WSD_PORT = 18080, 18554, 13702
GET_TIME = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    b'<s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
)


def gangnam_rows() -> list[dict[str, str]]:
    with BUNDLED_POSITIONS.open(encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["district"] == "강남구"]


async def onvif_state(host: str, port: int = ONVIF_PORT) -> str:
    """'refused', 'answers' (GetSystemDateAndTime works) or 'other'.

    'other' covers a connection caught while the camera goes down: like a camera losing power, it may
    just never answer, so each attempt has a short timeout.
    """
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as http,
            http.post(
                f"http://{host}:{port}/onvif/device_service",
                data=GET_TIME,
                headers={"Content-Type": "application/soap+xml"},
            ) as resp,
        ):
            body = await resp.read()
            return "answers" if resp.status == 200 and b"GetSystemDateAndTimeResponse" in body else "other"
    except aiohttp.ClientConnectorError as exc:
        return "refused" if isinstance(exc.os_error, ConnectionRefusedError) else "other"
    except (aiohttp.ClientError, TimeoutError):
        return "other"  # e.g. disconnected while the camera goes down


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Poll `check` until true; return how long it took (fails the test after timeout_s)."""
    t0 = time.monotonic()
    while not await check():
        assert time.monotonic() - t0 < timeout_s, f"condition not met within {timeout_s} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


# --- specs, ledger, secrets ---------------------------------------------------------------------------


def test_districts_map_both_ways() -> None:
    assert len(DISTRICTS) == 25
    assert (
        korean_name("gangnam") == "강남구" and slug_for("종로구") == "jongno" and slug_for("중구") == "jung"
    )
    with BUNDLED_POSITIONS.open(encoding="utf-8") as f:
        assert {r["district"] for r in csv.DictReader(f)} == set(DISTRICTS.values())


def test_specs_follow_the_positions_csv() -> None:
    specs = build_specs(FleetOptions("gangnam", 20, "127.40.1.1"))
    expanded = [r for r in gangnam_rows() for _ in range(int(r["count"]))][:20]
    assert [s.camera_id for s in specs] == [f"gangnam-{n:05d}" for n in range(1, 21)]
    assert [(s.lat, s.lon, s.address_text) for s in specs] == [
        (float(r["lat"]), float(r["lon"]), r["address"]) for r in expanded
    ]
    assert len({s.host for s in specs}) == 20 and specs[0].host == "127.40.1.1"
    macs = {s.mac for s in specs}
    assert len(macs) == 20 and all(int(m[:2], 16) & 0x02 and not int(m[:2], 16) & 0x01 for m in macs)
    assert len({s.password for s in specs}) == 20 and all(s.username == "admin" for s in specs)
    assert len({s.serial for s in specs}) == 20
    again = build_specs(FleetOptions("gangnam", 20, "127.40.1.1"))
    assert [s.password for s in again] == [s.password for s in specs]  # secrets can be rewritten
    other_seed = build_specs(FleetOptions("gangnam", 20, "127.40.1.1", seed=2))
    assert not {s.password for s in other_seed} & {s.password for s in specs}


def test_more_cameras_than_positions_cycle_with_jitter(tmp_path: Path) -> None:
    positions = tmp_path / "p.csv"
    positions.write_text(
        "district,lat,lon,count,address\n마포구,37.55,126.91,1,A\n마포구,37.56,126.92,2,B\n"
        "종로구,37.57,126.98,5,C\n",
        encoding="utf-8",
    )
    specs = build_specs(FleetOptions("mapo", 7, "127.40.1.1", positions_csv=positions))
    assert [s.address_text for s in specs] == ["A", "B", "B", "A", "B", "B", "A"]
    assert (specs[0].lat, specs[0].lon) == (37.55, 126.91)
    for cycled, original in zip(specs[3:], specs[:3] + specs[:1], strict=True):
        assert (cycled.lat, cycled.lon) != (original.lat, original.lon)
        assert abs(cycled.lat - original.lat) < 0.001 and abs(cycled.lon - original.lon) < 0.001
    assert [s.lat for s in build_specs(FleetOptions("mapo", 7, "127.40.1.1", positions_csv=positions))] == [
        s.lat for s in specs
    ]


def test_near_places_cameras_on_the_districts_positions_nearest_a_place() -> None:
    ahyeon = (37.5595, 126.9615)  # where Mapo, Seodaemun and Jung meet
    districts = ("mapo", "seodaemun", "jung")
    specs = {d: build_specs(FleetOptions(d, 3, "127.40.1.1", near=ahyeon)) for d in districts}

    for district, cameras in specs.items():
        rows = {(p.lat, p.lon) for p in read_positions(korean_name(district))}
        assert {(s.lat, s.lon) for s in cameras} <= rows  # the district's real positions
        distances = [math.dist((s.lat, s.lon), ahyeon) for s in cameras]
        assert distances == sorted(distances) and max(distances) < 0.003  # all within ~300 m, nearest first
    assert specs["mapo"][0].address_text == "서울특별시 마포구 보람어린이공원"
    h264 = build_specs(FleetOptions("mapo", 3, "127.40.1.1", near=ahyeon, codec="h264"))
    assert [s.codec for s in h264] == ["h264"] * 3 and "h265" in {s.codec for s in specs["mapo"]}
    assert [s.personality for s in h264] == [s.personality for s in specs["mapo"]]  # the same fleet otherwise
    ledger = ["write-ledger", "--district", "jung", "--cameras", "2", "--out", os.devnull]
    assert main([*ledger, "--near", "37.5595,126.9615"]) == 0
    with pytest.raises(SystemExit):
        main([*ledger, "--near", "ahyeon"])


def test_addresses_skip_network_and_broadcast_octets() -> None:
    assert host_addresses("127.40.0.253", 4) == ["127.40.0.253", "127.40.0.254", "127.40.1.1", "127.40.1.2"]
    with pytest.raises(ValueError, match=r"127\.255\.255\.254"):
        host_addresses("127.255.255.250", 10)


def test_codecs_and_personalities_are_mixed_by_seed() -> None:
    vendors = [Personality(name=n) for n in ("generic", "hikvision", "hanwha", "somebrand")]
    mix = personality_mix({p.name: p for p in vendors})
    specs = build_specs(FleetOptions("gangnam", 2000, "127.40.1.1"), mix)
    count = Counter(s.personality.name for s in specs)
    assert 900 < count["generic"] < 1100  # half the fleet is the well-behaved default
    assert count["hikvision"] > count["hanwha"] > count["somebrand"] > 50  # every vendor shows up
    assert 140 < sum(s.codec == "h265" for s in specs) < 260  # ~10%
    again = build_specs(FleetOptions("gangnam", 2000, "127.40.1.1"), mix)
    assert [s.personality.name for s in again] == [s.personality.name for s in specs]


def test_bundled_firmware_configs_join_the_mix() -> None:
    loaded = load_personalities()
    assert {"hikvision", "dahua", "hanwha", "axis", "idis"} <= set(loaded)  # one per shipped vendor profile
    specs = build_specs(FleetOptions("gangnam", 500, "127.40.1.1"), personality_mix(loaded))
    assert {s.personality.name for s in specs} == set(loaded)


def test_ledger_and_secrets_files(tmp_path: Path) -> None:
    specs = build_specs(FleetOptions("gangnam", 20, "127.40.1.1", onvif_port=ONVIF_PORT, rtsp_port=RTSP_PORT))
    ledger, secrets = tmp_path / "ledger.csv", tmp_path / "secrets.toml"
    write_ledger(specs, ledger)
    write_secrets(specs, secrets)
    rows = read_ledger(ledger)
    assert tuple(rows[0]) == LEDGER_COLUMNS
    assert rows[4]["camera_id"] == "gangnam-00005" and rows[4]["host"] == specs[4].host
    assert rows[4]["onvif_port"] == str(ONVIF_PORT) and rows[4]["credentials_ref"] == "cam/gangnam-00005"
    text = ledger.read_text(encoding="utf-8")
    assert not any(s.password in text for s in specs)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    creds = tomllib.loads(secrets.read_text(encoding="utf-8"))["credentials"]
    for row, spec in zip(rows, specs, strict=True):
        assert creds[row["credentials_ref"]] == {"username": "admin", "password": spec.password}


# --- running fleet ------------------------------------------------------------------------------------


@pytest.fixture
def specs() -> list[CameraSpec]:
    return build_specs(FleetOptions("gangnam", 20, "127.40.1.1", onvif_port=ONVIF_PORT, rtsp_port=RTSP_PORT))


@pytest.fixture
async def fleet(specs: list[CameraSpec], tmp_path: Path) -> AsyncIterator[Fleet]:
    running = Fleet(specs, media=MediaLibrary(tmp_path / "cache"), rtsp=True, wsd_port=WSD_PORT)
    await running.start()
    yield running
    await running.stop()


async def rtsp_refused(host: str) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, RTSP_PORT)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


@pytest.mark.integration
async def test_offline_closes_the_ports_and_online_reopens_them(
    fleet: Fleet, specs: list[CameraSpec]
) -> None:
    cam = specs[3]
    assert await onvif_state(cam.host) == "answers"
    assert not await rtsp_refused(cam.host)
    cam.faults.offline = True
    fleet.kick()
    took = await wait_for(lambda: _is(cam.host, "refused"), timeout_s=5.0)
    assert took < 3.0  # supervision runs every 0.5 s; generous for a loaded machine
    assert await rtsp_refused(cam.host)
    assert await onvif_state(specs[4].host) == "answers"  # its neighbours are unaffected
    cam.faults.offline = False  # no kick: the supervisor's own tick must notice
    await wait_for(lambda: _is(cam.host, "answers"), timeout_s=1.5)
    assert not await rtsp_refused(cam.host)


async def _is(host: str, state: str) -> bool:
    return await onvif_state(host) == state


@pytest.mark.integration
async def test_reboot_schedule_goes_away_and_comes_back(fleet: Fleet, specs: list[CameraSpec]) -> None:
    cam = specs[7]
    cam.faults.reboot_every_s, cam.faults.reboot_down_s = 2.0, 1.0
    cam.faults.started_at = time.monotonic()  # down during [1 s, 2 s), up again from 2 s
    await wait_for(lambda: _is(cam.host, "refused"), timeout_s=2.5)
    await wait_for(lambda: _is(cam.host, "answers"), timeout_s=2.5)
    assert fleet.stats.transition_errors == 0


@pytest.mark.integration
async def test_scenario_applied_at_start(specs: list[CameraSpec], tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        'seed = 7\n[[fault]]\ncameras = "gangnam-0000[1-2]"\noffline = true\n'
        '[[fault]]\ncameras = "25%"\nlatency_ms = 150\nimage = "black"\n',
        encoding="utf-8",
    )
    hits = apply_scenario(load_scenario(scenario), specs)
    assert hits == {"fault[0]": 2, "fault[1]": 5}
    slow = [s.camera_id for s in specs if s.faults.latency_ms == 150]
    assert slow == [s.camera_id for s in select_cameras(specs, "25%", seed=7)]  # same pick every run
    running = Fleet(specs, rtsp=False, wsd_port=WSD_PORT)
    await running.start()
    try:
        assert await onvif_state(specs[0].host) == "refused"
        assert await onvif_state(specs[1].host) == "refused"
        assert await onvif_state(specs[2].host) == "answers"
        found = await probe_unicast([s.host for s in specs], WSD_PORT, timeout_s=1.0)
        assert set(found) == {s.host for s in specs[2:]}
    finally:
        await running.stop()


# --- the CLI ------------------------------------------------------------------------------------------


def _read_until_ready(proc: subprocess.Popen[str], timeout_s: float) -> tuple[dict[str, object], list[str]]:
    assert proc.stdout is not None
    deadline, lines = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        event = json.loads(line)
        if event["event"] == "ready":
            return event, lines
    raise AssertionError(f"no ready line; stdout={lines} rc={proc.poll()}")


def _start_cli(tmp_path: Path, cameras: int, base_ip: str, *extra: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable,
        "-m",
        "camsim.cli",
        "run",
        "--district",
        "gangnam",
        "--cameras",
        str(cameras),
        "--base-ip",
        base_ip,
        "--onvif-port",
        str(ONVIF_PORT),
        "--rtsp-port",
        str(RTSP_PORT),
        "--wsd-port",
        str(WSD_PORT),
        "--control-port",
        "0",
        "--no-multicast",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--write-ledger",
        str(tmp_path / "ledger.csv"),
        "--secrets-out",
        str(tmp_path / "secrets.toml"),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


async def _get_json(url: str) -> object:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, url
        return await resp.json()


@pytest.mark.integration
async def test_cli_run_serves_until_sigterm(tmp_path: Path) -> None:
    proc = _start_cli(tmp_path, 30, "127.40.2.1", "--no-rtsp")
    try:
        ready, lines = await asyncio.to_thread(_read_until_ready, proc, 20.0)
        assert ready["cameras"] == 30 and ready["ledger"] == str(tmp_path / "ledger.csv")
        assert any(json.loads(line)["event"] == "progress" for line in lines)
        control = str(ready["control"])
        assert await _get_json(f"{control}/healthz") == {"ok": True, "cameras": 30}
        cameras = await _get_json(f"{control}/cameras")
        assert isinstance(cameras, list) and len(cameras) == 30
        assert cameras[29]["id"] == "gangnam-00030" and cameras[29]["ports"]["onvif"] == ONVIF_PORT
        assert await onvif_state(cameras[29]["host"]) == "answers"
        assert len(read_ledger(tmp_path / "ledger.csv")) == 30
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        assert await onvif_state(cameras[0]["host"]) == "refused"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[fault]]\ncameras = "5%"\nhang = "yes"\n', encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "camsim.cli",
            "run",
            "--district",
            "jung",
            "--cameras",
            "3",
            "--scenario",
            str(bad),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "fault[0]: hang: expected true or false" in proc.stderr


@pytest.mark.slow
@pytest.mark.integration
async def test_2700_cameras_start_fast_and_small(tmp_path: Path) -> None:
    """The scale bar: one process, 2,700 cameras (ONVIF + RTSP + WS-Discovery), < 10 s, < 1 GB RSS."""
    t_launch = time.monotonic()
    proc = _start_cli(tmp_path, 2700, "127.40.16.1")
    try:
        ready, _ = await asyncio.to_thread(_read_until_ready, proc, 60.0)
        wall_s = time.monotonic() - t_launch  # includes interpreter start, imports and building specs
        stats = await _get_json(f"{ready['control']}/stats")
        assert isinstance(stats, dict)
        hosts = [row["host"] for row in read_ledger(tmp_path / "ledger.csv")]
        t0 = time.monotonic()
        found = await probe_unicast(hosts, WSD_PORT, timeout_s=3.0)
        probe_s = time.monotonic() - t0
        states = await asyncio.gather(*(onvif_state(h) for h in hosts[::100]))
        rtsp_closed = await asyncio.gather(*(rtsp_refused(h) for h in hosts[::100]))
        print(
            f"\n2700 cameras: ready after {wall_s:.2f} s (serving {ready['startup_s']} s), "
            f"RSS {stats['rss_bytes'] / 2**20:.0f} MiB, WS-Discovery {len(found)}/2700 in {probe_s:.2f} s"
        )
        assert wall_s < 10.0
        assert stats["rss_bytes"] < 2**30
        assert len(found) == 2700
        assert set(states) == {"answers"}
        assert not any(rtsp_closed)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
