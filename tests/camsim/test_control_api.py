"""The control API against a live fleet: list, change faults, reset, validation, stats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from camsim.control_api import ControlApi
from camsim.fleet import Fleet, FleetOptions, build_specs
from camsim.media import MediaLibrary
from camsim.model import CameraSpec

pytestmark = pytest.mark.integration

ONVIF_PORT, RTSP_PORT, WSD_PORT = 18080, 18554, 13702
GET_TIME = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    b'<s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
)


@pytest.fixture
def specs() -> list[CameraSpec]:
    return build_specs(FleetOptions("jung", 20, "127.40.3.1", onvif_port=ONVIF_PORT, rtsp_port=RTSP_PORT))


@pytest.fixture
async def api(specs: list[CameraSpec], tmp_path: Path) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    fleet = Fleet(specs, media=MediaLibrary(tmp_path), rtsp=False, wsd_port=WSD_PORT)
    await fleet.start()
    control = ControlApi(fleet, 0)
    await control.start()
    async with aiohttp.ClientSession(base_url=control.url) as http:
        yield http, control.url
    await control.stop()
    await fleet.stop()


async def onvif_answers(host: str) -> bool | None:
    """True when GetSystemDateAndTime answers 200, False when the port refuses connections, else None.

    None covers a connection caught while the camera goes down: like a camera losing power, it may
    just never answer, so each attempt has a short timeout.
    """
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http,
            http.post(f"http://{host}:{ONVIF_PORT}/onvif/device_service", data=GET_TIME) as resp,
        ):
            return resp.status == 200
    except aiohttp.ClientConnectorError as exc:
        return False if isinstance(exc.os_error, ConnectionRefusedError) else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_until_answers(host: str, expected: bool, timeout_s: float) -> float:
    t0 = time.monotonic()
    while await onvif_answers(host) != expected:
        assert time.monotonic() - t0 < timeout_s, f"{host} answers={not expected} after {timeout_s} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_health_and_camera_list(
    api: tuple[aiohttp.ClientSession, str], specs: list[CameraSpec]
) -> None:
    http, _ = api
    async with http.get("/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["ok"] is True
    async with http.get("/cameras") as resp:
        cameras = await resp.json()
    assert [c["id"] for c in cameras] == [s.camera_id for s in specs]
    first = cameras[0]
    assert first["host"] == "127.40.3.1" and first["ports"] == {
        "onvif": ONVIF_PORT,
        "rtsp": RTSP_PORT,
        "wsd": WSD_PORT,
    }
    assert first["faults"]["offline"] is False and first["up"] is True
    assert "password" not in str(cameras)
    async with http.get("/cameras/jung-00002") as resp:
        assert (await resp.json())["host"] == "127.40.3.2"
    async with http.get("/cameras/jung-99999") as resp:
        assert resp.status == 404 and "jung-99999" in (await resp.json())["error"]


async def test_patch_offline_then_online(
    api: tuple[aiohttp.ClientSession, str], specs: list[CameraSpec]
) -> None:
    http, _ = api
    host = specs[5].host
    assert await onvif_answers(host)
    async with http.patch("/cameras/jung-00006/faults", json={"offline": True}) as resp:
        assert resp.status == 200 and (await resp.json())["faults"]["offline"] is True
    assert await wait_until_answers(host, False, timeout_s=5.0) < 3.0  # supervision runs every 0.5 s
    async with http.get("/cameras/jung-00006") as resp:
        assert (await resp.json())["up"] is False
    async with http.patch("/cameras/jung-00006/faults", json={"offline": False}) as resp:
        assert resp.status == 200
    assert await wait_until_answers(host, True, timeout_s=5.0) < 3.0


async def test_patch_reboot_schedule(api: tuple[aiohttp.ClientSession, str], specs: list[CameraSpec]) -> None:
    http, _ = api
    async with http.patch(
        "/cameras/jung-00008/faults", json={"reboot_every_s": 2, "reboot_down_s": 1}
    ) as resp:
        assert resp.status == 200
    await wait_until_answers(specs[7].host, False, timeout_s=2.5)
    await wait_until_answers(specs[7].host, True, timeout_s=2.5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ofline": True}, "unknown fault field(s): ofline"),
        ({"offline": "yes"}, "offline: expected true or false"),
        ({"latency_ms": 1.5}, "latency_ms: expected an integer >= 0"),
        ({"image": "purple"}, "image: expected one of none, black"),
        ({"reboot_every_s": 2, "reboot_down_s": 3}, "reboot_down_s must be shorter than reboot_every_s"),
        ([1, 2], "body must be a JSON object"),
    ],
)
async def test_bad_patch_is_400_with_a_message(
    api: tuple[aiohttp.ClientSession, str], specs: list[CameraSpec], body: object, message: str
) -> None:
    http, _ = api
    async with http.patch("/cameras/jung-00001/faults", json=body) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    assert specs[0].faults.reboot_every_s is None and specs[0].faults.offline is False  # nothing half-applied


async def test_non_json_body_is_400(api: tuple[aiohttp.ClientSession, str]) -> None:
    http, _ = api
    async with http.patch("/cameras/jung-00001/faults", data=b"offline=true") as resp:
        assert resp.status == 400 and "JSON" in (await resp.json())["error"]


async def test_bulk_faults_and_reset(api: tuple[aiohttp.ClientSession, str], specs: list[CameraSpec]) -> None:
    http, _ = api
    async with http.post("/faults", json={"cameras": "25%", "seed": 3, "hang": True}) as resp:
        hung = (await resp.json())["cameras"]
    assert len(hung) == 5 and {s.camera_id for s in specs if s.faults.hang} == set(hung)
    async with http.post("/faults", json={"cameras": ["jung-0001?", "jung-00002"], "latency_ms": 50}) as resp:
        assert sorted((await resp.json())["cameras"]) == [
            "jung-00002",
            *[f"jung-{n:05d}" for n in range(10, 20)],
        ]
    async with http.post("/faults", json={"cameras": "nothing-*", "offline": True}) as resp:
        assert resp.status == 400 and "matches no camera" in (await resp.json())["error"]
    async with http.post("/faults", json={"hang": True}) as resp:
        assert resp.status == 400 and "cameras: required" in (await resp.json())["error"]
    async with http.post("/reset") as resp:
        assert resp.status == 200
    assert not any(s.faults.hang or s.faults.latency_ms for s in specs)


async def test_stats_count_requests_and_memory(
    api: tuple[aiohttp.ClientSession, str], specs: list[CameraSpec]
) -> None:
    http, _ = api
    async with http.get("/stats") as resp:
        before = await resp.json()
    assert await onvif_answers(specs[0].host) and await onvif_answers(specs[1].host)
    async with http.get("/stats") as resp:
        after = await resp.json()
    assert after["onvif_requests_total"] == before["onvif_requests_total"] + 2
    assert after["cameras"] == after["cameras_up"] == 20
    assert 10 * 2**20 < after["rss_bytes"] < 2**30
    assert after["rtsp_sessions"] == 0 and "wsd_probes" in after
