"""The agent's Profile G client against camsim: services learned at enumeration (GetServices, or
GetCapabilities when GetServices is refused), the camera's recording found through Hikvision's quirks (HTTP
Digest, a paged search, times without a zone), and a recording token that does not exist. Cameras on
127.63.3.x."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.credentials import Credentials
from agent.ledger import LedgerCamera
from agent.onvif_reader import RecordingServices
from agent.onvif_soap import Device, enumerate_camera, new_session
from agent.recorded.profile_g import Endpoint, RecordingError, find_recording, replay_path
from camsim.fleet import Fleet, FleetOptions, build_specs
from camsim.media import MediaLibrary
from camsim.model import CameraSpec
from camsim.personalities import load_personalities
from camsim.recording import Archive
from tests.services import free_port

RETENTION_S = 2 * 86_400
SERVICES = RecordingServices("/onvif/search_service", "/onvif/replay_service")


@pytest.fixture
async def cameras(tmp_path: Path) -> AsyncIterator[list[CameraSpec]]:
    """A Hikvision with Profile G, the same refusing GetServices, and one without recorded storage."""
    specs = build_specs(FleetOptions("gangnam", 3, "127.63.3.1", free_port(), free_port()))
    hikvision = dataclasses.replace(  # as firmware-configs/hikvision.toml describes it
        load_personalities()["hikvision"], profile_g=True, search_results_paged=True,
        recording_times_without_zone=True,
    )  # fmt: skip
    specs[0].personality = hikvision
    specs[1].personality = dataclasses.replace(hikvision, get_services_unsupported=True)
    specs[2].personality = dataclasses.replace(hikvision, profile_g=False)
    archive = Archive()
    archive.record(specs, retention_s=RETENTION_S)
    fleet = Fleet(
        specs, media=MediaLibrary(tmp_path / "cache"), archive=archive, rtsp=False, wsd_port=free_port()
    )
    await fleet.start()
    yield specs
    await fleet.stop()


def ledger(spec: CameraSpec) -> LedgerCamera:
    return LedgerCamera(
        camera_id=spec.camera_id, host=spec.host, onvif_port=spec.onvif_port, rtsp_port=spec.rtsp_port
    )


def creds(spec: CameraSpec) -> Credentials:
    from pydantic import SecretStr

    return Credentials(spec.username, SecretStr(spec.password))


async def test_enumeration_learns_which_cameras_offer_search_and_replay(cameras: list[CameraSpec]) -> None:
    async with new_session(4) as session:
        found = [await enumerate_camera(session, ledger(s), creds(s), timeout_s=5) for s in cameras]
    assert [info.recording for info in found] == [
        SERVICES,
        SERVICES,
        None,
    ]  # GetServices, GetCapabilities, none


async def test_the_recording_is_found_with_its_retention_through_the_vendor_quirks(
    cameras: list[CameraSpec],
) -> None:
    spec = cameras[0]
    endpoint = Endpoint(Device(ledger(spec), creds(spec)), spec.camera_id, "camera", SERVICES)
    async with new_session(4) as session:
        info = await find_recording(session, endpoint, spec.camera_id, timeout_s=5)
        path = await replay_path(session, endpoint, info.token, timeout_s=5)
        with pytest.raises(RecordingError) as err:
            await replay_path(session, endpoint, "rec-no-such-recording", timeout_s=5)
    assert (info.token, path) == (f"rec-{spec.camera_id}", f"/replay/rec-{spec.camera_id}")
    assert info.earliest is not None and info.latest is not None
    assert abs(info.earliest.timestamp() - (time.time() - RETENTION_S)) < 3  # zone-less times read as UTC
    assert abs(info.latest.timestamp() - time.time()) < 3
    assert err.value.kind == "unknown_token" and "does not exist" in str(err.value)
