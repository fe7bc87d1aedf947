"""What one simulated camera is (its spec) and what is wrong with it right now (its faults).

Both the ONVIF/WS-Discovery side and the RTSP side of the simulator read these objects; the
control API and the scenario file write the faults. They are plain dataclasses so a fleet of
2,700 costs little memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

ImageFault = Literal["none", "black", "frozen", "blurred", "covered"]
Codec = Literal["h264", "h265"]
AuthMode = Literal["ws-security", "http-digest", "none"]


@dataclass
class Faults:
    """Faults of one camera; all off by default. Mutated at run time by the control API."""

    offline: bool = False  # refuses connections (port closed)
    hang: bool = False  # accepts TCP, never answers
    latency_ms: int = 0  # added before every ONVIF/HTTP answer
    clock_skew_s: float = 0.0  # camera clock = real clock + skew
    wrong_credentials: bool = False  # camera rejects the configured password
    image: ImageFault = "none"
    stream_stop_after_s: float | None = None  # RTSP stops sending after this many seconds
    reboot_every_s: float | None = None  # goes away for reboot_down_s every reboot_every_s
    reboot_down_s: float = 5.0
    # Profile G faults (camsim/replay.py, camsim/onvif_recording.py): refuse every replay; go silent after
    # this much footage; serve footage this far from the time asked (labelled with its true time).
    replay_refused: bool = False
    replay_stall_after_s: float | None = None
    replay_time_shift_s: float = 0.0
    search_stale_tokens: bool = False  # search results name recordings by tokens that no longer exist
    started_at: float = field(default_factory=time.monotonic)

    def rebooting(self, now: float | None = None) -> bool:
        """True while a scheduled reboot has the camera down."""
        if not self.reboot_every_s:
            return False
        elapsed = (time.monotonic() if now is None else now) - self.started_at
        return elapsed % self.reboot_every_s >= self.reboot_every_s - self.reboot_down_s

    def unreachable(self) -> bool:
        return self.offline or self.rebooting()


@dataclass
class Personality:
    """A vendor's strings and quirks, loaded from firmware-configs/ (see camsim/personalities.py)."""

    name: str = "generic"
    manufacturer: str = "CamSim"
    model: str = "CS-1000"
    firmware: str = "1.0.0"
    hardware_id: str = "CS1000"
    auth: AuthMode = "ws-security"
    reject_utc_plus_offset: bool = False  # reject `+00:00` timestamps, accept only `Z`
    xaddr_wrong_host: bool = False  # XAddrs name 127.0.0.1 / a NAT address instead of ours
    xaddr_wrong_port: bool = False
    rtsp_uri_wrong_port: bool = False
    rtsp_uri_without_credentials: bool = True
    h265_only: bool = False
    get_services_unsupported: bool = False
    slow_ms: int = 0  # vendor's baseline answer latency
    # Pictures encoded in this many slices, each keyframe slice sent with the parameter sets before it (as
    # some DVRs do): RTSP clients then get one keyframe-flagged packet per slice. 1: the encoder's default.
    keyframe_slices: int = 1
    snapshot_uri_malformed: bool = False  # GetSnapshotUri answers HTTP 200 with a cut-off envelope
    wsse_not_understood: bool = False  # refuses any WS-Security header with a SOAP MustUnderstand fault
    # ONVIF Profile G (camsim/recording.py): the camera records to its own storage and offers Search/Replay.
    profile_g: bool = False
    search_results_paged: bool = False  # the first GetRecordingSearchResults says "Searching", no results yet
    replay_ignores_rate_control: bool = False  # plays at real time whatever Rate-Control says
    recording_times_without_zone: bool = False  # EarliestRecording etc. without "Z" (meant as UTC)


@dataclass
class CameraSpec:
    """Identity, address and position of one simulated camera."""

    camera_id: str  # ledger id, e.g. "gangnam-000123"
    district: str  # ASCII slug, e.g. "gangnam"
    host: str  # its own loopback address, e.g. "127.20.0.5"
    onvif_port: int = 80
    rtsp_port: int = 554
    username: str = "admin"
    password: str = "admin"  # noqa: S105 - a simulated camera's factory default, as real ones ship
    name: str = ""
    address_text: str = ""  # street address (Korean), not an IP
    lat: float = 0.0
    lon: float = 0.0
    mac: str = "00:00:00:00:00:00"
    serial: str = ""
    codec: Codec = "h264"
    main_size: tuple[int, int] = (1920, 1080)
    sub_size: tuple[int, int] = (640, 360)
    fps: int = 25
    gop: int = 50  # frames between keyframes
    personality: Personality = field(default_factory=Personality)
    faults: Faults = field(default_factory=Faults)
    recorder: str = ""  # the recorder (its camera_id) that stores this camera's footage, if any
    records: tuple[str, ...] = ()  # a recorder: the cameras whose footage it stores and replays


@dataclass(frozen=True)
class StreamProfile:
    """One media profile as ONVIF describes it and RTSP serves it."""

    token: str  # ONVIF profile token: "main" or "sub"
    path: str  # RTSP path on the camera: "/stream1" or "/stream2"
    codec: Codec
    width: int
    height: int
    fps: int
    gop: int
    bitrate_kbps: int
    keyframe_slices: int = 1  # see Personality.keyframe_slices


def stream_profiles(spec: CameraSpec) -> list[StreamProfile]:
    """The main and sub stream of a camera. An H.265-only personality serves H.265 on both."""
    codec: Codec = "h265" if spec.personality.h265_only else spec.codec
    main_w, main_h = spec.main_size
    sub_w, sub_h = spec.sub_size
    slices = spec.personality.keyframe_slices
    return [
        StreamProfile("main", "/stream1", codec, main_w, main_h, spec.fps, spec.gop, 4096, slices),
        StreamProfile("sub", "/stream2", codec, sub_w, sub_h, spec.fps, spec.gop, 512, slices),
    ]
