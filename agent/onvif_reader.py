"""Reads one camera's metadata with onvif-zeep-async and turns zeep objects into plain dataclasses.

Third-party exceptions become `CameraError` here and nowhere else. onvif-zeep-async's own timeout is a fixed
90 s, so every camera read runs under our own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError

from agent.credentials import Credentials
from agent.errors import CameraError
from agent.ledger import LedgerCamera

# ONVIF Encoding, lowercased without dots -> the contract's codec name (StreamSummary.codec).
_CODECS = {"h264": "h264", "h265": "h265", "hevc": "h265", "jpeg": "mjpeg"}


@dataclass(frozen=True)
class StreamInfo:
    """One media profile. `uri` is sensitive (camera address): it stays inside the agent."""

    token: str
    codec: str
    width: int
    height: int
    fps: float
    bitrate_kbps: int | None
    uri: str = field(repr=False, default="")


@dataclass(frozen=True)
class RecordingServices:
    """Paths of a Profile G device's Search and Replay services (their advertised hosts are never used)."""

    search_path: str
    replay_path: str


@dataclass(frozen=True)
class CameraInfo:
    manufacturer: str
    model: str
    firmware: str
    serial: str
    hardware_id: str
    mac: str | None
    clock_offset_s: float | None
    streams: list[StreamInfo]
    snapshot_uri: str = field(repr=False, default="")  # sensitive like StreamInfo.uri; "" if unknown
    recording: RecordingServices | None = None  # the camera's own recorded storage (Profile G), if offered

    @property
    def identity(self) -> tuple[str, str]:
        """(kind, value): a hash of the MAC, else of the serial; the IP is never an identity."""
        if self.mac:
            return "mac", "mac-" + hashlib.sha256(self.mac.lower().encode()).hexdigest()[:16]
        if self.serial:
            return "serial", "sn-" + hashlib.sha256(self.serial.encode()).hexdigest()[:16]
        return "ledger", ""


async def read_camera(camera: LedgerCamera, creds: Credentials | None, timeout_s: float) -> CameraInfo:
    """Device information, MAC, clock offset and profiles of one camera, within `timeout_s` overall."""
    user, password = (creds.username, creds.password.get_secret_value()) if creds else (None, None)
    # nat_override: cameras that advertise a wrong host or port in XAddrs are reached where we reached them.
    cam = ONVIFCamera(camera.host, camera.onvif_port, user, password, adjust_time=True, nat_override=True)
    try:
        return await asyncio.wait_for(_read(cam), timeout_s)
    except TimeoutError:
        raise CameraError("timeout", f"no complete answer within {timeout_s:g} s") from None
    except CameraError:
        raise
    except Exception as exc:
        raise _convert(exc) from None
    finally:
        await _close_quietly(cam)


async def _read(cam: ONVIFCamera) -> CameraInfo:
    await cam.update_xaddrs()
    device = await cam.create_devicemgmt_service()
    info = await device.GetDeviceInformation()
    mac = await _mac(device)
    media = await cam.create_media_service()
    profiles = await media.GetProfiles()
    streams = [await _stream(media, profile) for profile in profiles]
    offset = cam.dt_diff.total_seconds() if cam.dt_diff is not None else None
    return CameraInfo(
        manufacturer=str(info.Manufacturer or ""),
        model=str(info.Model or ""),
        firmware=str(info.FirmwareVersion or ""),
        serial=str(info.SerialNumber or ""),
        hardware_id=str(info.HardwareId or ""),
        mac=mac,
        clock_offset_s=offset,
        streams=streams,
    )


async def _mac(device: Any) -> str | None:
    interfaces = await device.GetNetworkInterfaces()
    for interface in interfaces or []:
        hw = getattr(getattr(interface, "Info", None), "HwAddress", None)
        if hw:
            return str(hw)
    return None


async def _stream(media: Any, profile: Any) -> StreamInfo:
    encoder = profile.VideoEncoderConfiguration
    resolution = getattr(encoder, "Resolution", None)
    rate = getattr(encoder, "RateControl", None)
    request = {
        "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
        "ProfileToken": profile.token,
    }
    uri = await media.GetStreamUri(request)
    return StreamInfo(
        token=str(profile.token),
        codec=contract_codec(getattr(encoder, "Encoding", "")),
        width=int(getattr(resolution, "Width", 0) or 0),
        height=int(getattr(resolution, "Height", 0) or 0),
        fps=float(getattr(rate, "FrameRateLimit", 0) or 0),
        bitrate_kbps=int(rate.BitrateLimit) if rate is not None and rate.BitrateLimit is not None else None,
        uri=str(uri.Uri),
    )


def contract_codec(encoding: object) -> str:
    """The contract's codec name for an ONVIF Encoding ("H264", "H.265", "HEVC", "JPEG", ...); "other"."""
    name = str(encoding or "").lower().replace(".", "")
    return _CODECS.get(name, "other")


def _convert(exc: BaseException) -> CameraError:
    """The one place onvif/zeep/aiohttp exceptions become our taxonomy."""
    text = str(exc)
    if isinstance(exc, ONVIFAuthError) or _is_auth_fault(exc) or "401" in text:
        return CameraError("unauthorized", "camera rejected the credentials")
    if isinstance(exc, ONVIFTimeoutError | TimeoutError):
        return CameraError("timeout", "camera did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | OSError):
        return CameraError("unreachable", type(exc).__name__)
    if isinstance(exc, zeep.exceptions.Fault | zeep.exceptions.XMLParseError | ONVIFError):
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ClientConnectionError | ConnectionError | OSError):
            return CameraError("unreachable", type(cause).__name__)
        return CameraError("protocol", text[:200])
    return CameraError("protocol", f"{type(exc).__name__}: {text[:200]}")


def _is_auth_fault(exc: BaseException) -> bool:
    """ter:NotAuthorized, in the fault's subcodes or (wrapped by onvif) in its text."""
    fault = exc if isinstance(exc, zeep.exceptions.Fault) else exc.__cause__
    subcodes = getattr(fault, "subcodes", None) or []
    if any("NotAuthorized" in str(code) for code in subcodes):
        return True
    text = str(exc).lower()
    return "notauthorized" in text or "not authorized" in text


async def _close_quietly(cam: ONVIFCamera) -> None:
    # Closing a broken camera must not hide the real error.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(cam.close(), 2.0)
