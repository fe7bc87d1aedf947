"""A fleet that fails or is stopped half-way leaves no port bound: a later fleet on the same addresses starts.

A camera caught between its two servers (a start that failed at its RTSP port, a transition cancelled when
the fleet stops) still has a listening ONVIF socket; if the fleet forgot it, the port stayed bound for as long
as anything referred to the fleet (a failed test's traceback does, for the rest of the session)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from camsim.fleet import Fleet, FleetOptions, build_specs
from camsim.model import CameraSpec
from camsim.rtsp_server import RtspServer
from tests.services import free_port

BASE_IP = "127.67.1.1"  # this module's camsim addresses


@pytest.fixture
def specs() -> list[CameraSpec]:
    return build_specs(FleetOptions("gangnam", 4, BASE_IP, onvif_port=free_port(), rtsp_port=free_port()))


def addresses(specs: list[CameraSpec]) -> list[tuple[str, int]]:
    return [(s.host, port) for s in specs for port in (s.onvif_port, s.rtsp_port)]


def bound(specs: list[CameraSpec]) -> list[tuple[str, int]]:
    """The fleet's addresses something still listens on (SO_REUSEADDR, as the servers bind: only a listener,
    not a closed connection in TIME_WAIT, keeps the port)."""
    held = []
    for address in addresses(specs):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError:
                held.append(address)
    return held


@pytest.fixture
def rtsp_port_taken(specs: list[CameraSpec]) -> Iterator[None]:
    """The third camera's RTSP address is held by another listener."""
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((specs[2].host, specs[2].rtsp_port))
        blocker.listen()
        yield


async def test_a_start_that_fails_half_way_closes_every_listener(
    specs: list[CameraSpec], rtsp_port_taken: None
) -> None:
    fleet = Fleet(specs, rtsp=True, wsd_port=free_port())
    with pytest.raises(OSError, match="address already in use"):
        await fleet.start()
    held = bound(specs)
    assert held == [(specs[2].host, specs[2].rtsp_port)]  # the blocker's, no camera's


async def test_stop_closes_a_camera_caught_between_its_servers(
    specs: list[CameraSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = specs[0]
    camera.faults.offline = True  # not started with the others
    fleet = Fleet(specs, rtsp=True, wsd_port=free_port())
    await fleet.start()
    listening = asyncio.Event()
    start = RtspServer.start

    async def stuck(server: RtspServer) -> None:
        """Camera 1 comes back up no further than its ONVIF server (the RTSP server never listens)."""
        if server.spec.camera_id != camera.camera_id:
            await start(server)
            return
        listening.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(RtspServer, "start", stuck)
    camera.faults.offline = False
    fleet.kick()
    await asyncio.wait_for(listening.wait(), 5)
    assert (camera.host, camera.onvif_port) in bound(specs)  # half-way up: ONVIF listens
    await fleet.stop()
    assert bound(specs) == []
