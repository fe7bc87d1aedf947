"""Pre-encoded clips, their disk cache, snapshots, and RTP packetisation of clips (no network)."""

from __future__ import annotations

import statistics
import struct
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

import camsim.media
from camsim.font import read_text
from camsim.media import MediaLibrary, nal_type, split_annexb
from camsim.model import CameraSpec, StreamProfile
from camsim.rtp import (
    MAX_PAYLOAD,
    NTP_EPOCH_OFFSET,
    Stamper,
    build_template,
    fragment,
    packetize,
    sei_user_data,
)

LOOP_S = 4.0


def profile(codec: str = "h264", width: int = 320, height: int = 180, kbps: int = 1024) -> StreamProfile:
    return StreamProfile("main", "/stream1", codec, width, height, 25, 25, kbps)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaLibrary:
    return MediaLibrary(tmp_path_factory.mktemp("clips"), loop_s=LOOP_S)


@pytest.mark.parametrize(("codec", "parameter_types"), [("h264", [7, 8]), ("h265", [32, 33, 34])])
def test_clip_is_a_seamless_gop_structured_loop(
    media: MediaLibrary, codec: str, parameter_types: list[int]
) -> None:
    clip = media.clip(profile(codec), "none")
    assert clip.frames == LOOP_S * 25
    assert [u.pts for u in clip.units] == list(range(clip.frames))
    assert [i for i, u in enumerate(clip.units) if u.keyframe] == list(range(0, clip.frames, 25))
    assert [nal_type(codec, p) for p in clip.parameter_sets] == parameter_types
    carried = {nal_type(codec, nal) for u in clip.units for nal in u.nals}
    assert not carried & {*parameter_types, 6, 9, 35, 39}, (
        "parameter sets, SEI, AUD are added by the packetiser"
    )


def test_bitrate_is_near_the_profile(media: MediaLibrary) -> None:
    clip = media.clip(profile(width=640, height=360, kbps=512), "none")
    assert 0.7 * 512 < clip.bitrate_kbps < 1.3 * 512


def test_cache_is_reused_by_a_new_library(media: MediaLibrary, monkeypatch: pytest.MonkeyPatch) -> None:
    first = media.clip(profile(), "covered")

    def no_encoding(*_: object) -> None:
        raise AssertionError("should load from the cache")

    monkeypatch.setattr(camsim.media, "encode_loop", no_encoding)
    again = MediaLibrary(media.cache_dir, loop_s=LOOP_S).clip(profile(), "covered")
    assert again.units[7].nals == first.units[7].nals and again.parameter_sets == first.parameter_sets
    names = {p.name for p in media.cache_dir.iterdir()}
    assert "h264-320x180-25fps-g25-1024k-covered-4s-v2.annexb" in names


def test_cached_file_is_a_playable_annexb_stream(media: MediaLibrary) -> None:
    media.clip(profile("h265"), "none")
    path = media.cache_dir / "h265-320x180-25fps-g25-1024k-none-4s-v2.annexb"
    with av.open(str(path), format="hevc") as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == LOOP_S * 25


def test_concurrent_first_use_encodes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = camsim.media.encode_loop

    def counting(*args: object) -> object:
        calls.append(args)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(camsim.media, "encode_loop", counting)
    library = MediaLibrary(tmp_path, loop_s=LOOP_S)
    clips = []
    threads = [
        threading.Thread(target=lambda: clips.append(library.clip(profile(), "black"))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(c) for c in clips}) == 1


def test_loop_must_divide_a_minute(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divide 60"):
        MediaLibrary(tmp_path, loop_s=7)


def decode_jpeg(data: bytes) -> np.ndarray:
    codec = av.CodecContext.create("mjpeg", "r")
    frames = codec.decode(av.Packet(data))
    return frames[0].to_ndarray(format="gray")


def test_snapshot_shows_camera_id_and_camera_time(media: MediaLibrary) -> None:
    spec = CameraSpec("gangnam-000123", "gangnam", "127.0.32.1", main_size=(1920, 1080))
    spec.faults.clock_skew_s = 3 * 3600
    jpeg = media.snapshot_jpeg(spec)
    gray = decode_jpeg(jpeg)
    assert jpeg[:2] == b"\xff\xd8" and gray.shape == (360, 640)
    assert read_text(gray, 360 - 40, 8, 2, len(spec.camera_id)) == "GANGNAM-000123"
    shown = read_text(gray, 360 - 20, 8, 2, 19)
    expected = {
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + spec.faults.clock_skew_s - d))
        for d in (0, 1)
    }
    assert shown in expected


def test_snapshot_is_cheap_and_per_camera(media: MediaLibrary) -> None:
    specs = [CameraSpec(f"cam-{i}", "x", "127.0.32.1") for i in range(21)]
    media.snapshot_jpeg(specs[0])
    costs = []
    for spec in specs[1:]:
        started = time.perf_counter()
        media.snapshot_jpeg(spec)
        costs.append(time.perf_counter() - started)
    # Cheap enough to serve on demand (~3 ms here); a generous bound so a loaded machine does not fail it.
    assert statistics.median(costs) < 0.050
    assert media.snapshot_jpeg(specs[1]) != media.snapshot_jpeg(specs[2])


def test_snapshot_honours_image_faults(media: MediaLibrary) -> None:
    spec = CameraSpec("cam-black", "x", "127.0.32.1")
    normal = decode_jpeg(media.snapshot_jpeg(spec))
    spec.faults.image = "black"
    black = decode_jpeg(media.snapshot_jpeg(spec))
    assert normal[:300].mean() > 60 and black[:300].mean() < 5  # the OSD lines at the bottom stay


# --- RTP packetisation (RFC 6184 / RFC 7798) ---


def reassemble(codec: str, payloads: list[bytes]) -> bytes:
    if len(payloads) == 1:
        return payloads[0]
    head_len = 2 if codec == "h265" else 1
    first, fu_header = payloads[0], payloads[0][head_len]
    assert fu_header & 0x80 and payloads[-1][head_len] & 0x40
    if codec == "h265":
        assert (first[0] >> 1) & 0x3F == 49
        header = bytes([(first[0] & 0x81) | ((fu_header & 0x3F) << 1), first[1]])
    else:
        assert first[0] & 0x1F == 28
        header = bytes([(first[0] & 0xE0) | (fu_header & 0x1F)])
    return header + b"".join(p[head_len + 1 :] for p in payloads)


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_large_nal_units_fragment_and_reassemble(media: MediaLibrary, codec: str) -> None:
    keyframe = media.clip(profile(codec), "none").units[0].nals
    big = max(keyframe, key=len)
    payloads = fragment(codec, big)
    assert len(big) > MAX_PAYLOAD and len(payloads) > 1 and all(len(p) <= MAX_PAYLOAD for p in payloads)
    assert reassemble(codec, payloads) == big


def test_stamper_numbers_packets_continuously_and_marks_access_unit_end() -> None:
    unit = build_template([b"\x65" * 100, b"\x41" * 50], marker=True)
    stamper = Stamper(ssrc=0xDEADBEEF, first_seq=0xFFFF, channel=2)
    buf = bytes(stamper.stamp([unit, unit], 1234))
    headers = [struct.unpack_from(">cBHBBHII", buf, off) for off in (0, 116, 182, 298)]
    assert [h[5] for h in headers] == [0xFFFF, 0, 1, 2]  # sequence numbers wrap
    assert {(h[0], h[1], h[6], h[7]) for h in headers} == {(b"$", 2, 1234, 0xDEADBEEF)}
    assert [h[4] >> 7 for h in headers] == [0, 1, 0, 1]
    report = stamper.sender_report(1_700_000_000.5, 99)
    ch, _, ntp_s, ntp_frac, rtp_ts, packets = struct.unpack_from(">xBH8xIIII", report)[:6]
    assert (ch, ntp_s - NTP_EPOCH_OFFSET, ntp_frac, rtp_ts, packets) == (3, 1_700_000_000, 1 << 31, 99, 4)


def test_sei_carries_camera_id_with_emulation_prevention() -> None:
    sei = sei_user_data("h264", "camsim:x\x00\x00\x01")
    assert sei[0] == 6 and b"camsim:x" in sei and b"\x00\x00\x03\x01" in sei
    assert split_annexb(b"\x00\x00\x00\x01" + sei) == [sei]
    assert sei_user_data("h265", "camsim:y")[:2] == bytes([39 << 1, 1])


def test_packetized_clip_starts_sessions_on_keyframes(media: MediaLibrary) -> None:
    packets = packetize(media.clip(profile(), "none"))
    assert packets is packetize(media.clip(profile(), "none"))  # shared by every session
    assert packets.keyframe_at_or_before[:30] == (0,) * 25 + (25,) * 5
