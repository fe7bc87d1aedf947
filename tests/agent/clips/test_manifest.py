"""Evidence manifests: key handling, canonical signing, verification and the verify-clip CLI."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.clips.manifest import (
    build_manifest,
    file_digest,
    manifest_json,
    sign_manifest,
    verify,
    verify_main,
)
from common.signing import key_id, load_or_create_key, public_key_pem, signed_body
from contract.manifest import Manifest

CLIP = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40
THUMB = b"\xff\xd8\xff\xe0 a thumbnail"


def manifest_for(clip: bytes = CLIP, thumb: bytes = THUMB, manufacturer: str = "Hanwha") -> Manifest:
    start = datetime(2026, 3, 1, 5, 2, 10, tzinfo=UTC)
    return build_manifest(
        camera={
            "id": "gangnam-000123",
            "manufacturer": manufacturer,
            "model": "XNO-6080R",
            "firmware": "2.10.1",
            "address": "rtsp://10.1.2.3:554/stream1",
        },
        district="gangnam",
        request_id="req-42",
        agency="112",
        incident="INC-2026-0301-7",
        purpose="missing child search",
        requested=(start, start + timedelta(seconds=90)),
        covered=(start - timedelta(seconds=0.4), start + timedelta(seconds=90.6)),
        wallclock_source="rtcp",
        clock_offset_s=1.23456,
        agent_id="agent-gangnam-1",
        software_version="0.1.0",
        objects={
            "clip": "gangnam/2026/03/01/req-42.mp4",
            "thumbnail": "gangnam/2026/03/01/req-42.jpg",
            "manifest": "gangnam/2026/03/01/req-42.manifest.json",
        },
        clip=file_digest(clip),
        thumbnail=file_digest(thumb),
        complete=True,
    )


def test_key_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "agent.pem"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_or_create_key(path)
    assert key_id(again.public_key()) == key_id(key.public_key())
    assert len(key_id(key.public_key())) == 16
    assert public_key_pem(key).startswith(b"-----BEGIN PUBLIC KEY-----")


def test_signed_manifest_verifies_and_is_canonical(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "agent.pem")
    signed = sign_manifest(manifest_for(), key)
    assert signed.signature is not None and signed.signature.alg == "ed25519"
    assert signed.signature.key_id == key_id(key.public_key())
    stored = json.loads(manifest_json(signed))
    assert "address" not in stored["camera"] and b"10.1.2.3" not in manifest_json(signed)
    assert stored["clock_offset_s"] == 1.235 and stored["covered"]["start"] == "2026-03-01T05:02:09.600000Z"
    assert verify(CLIP, stored, public_key_pem(key), thumbnail=THUMB) == []
    clip_file = tmp_path / "clip.mp4"
    clip_file.write_bytes(CLIP)
    assert verify(clip_file, signed, public_key_pem(key)) == []
    body = signed_body(signed)
    assert b" " not in body.replace(b"missing child search", b"") and body.startswith(b'{"agency":"112"')
    assert b"signature" not in body
    # Key order in the stored JSON does not matter: the signature is over the canonical form.
    reordered = json.loads(json.dumps(dict(reversed(list(stored.items())))))
    assert verify(CLIP, reordered, public_key_pem(key)) == []


def test_overlong_camera_text_is_cut_to_the_contract_length() -> None:
    """A camera that sends a 2,000-character manufacturer still gets its clips delivered."""
    assert manifest_for(manufacturer="X" * 2000).camera.manufacturer == "X" * 500


def test_tampering_is_reported(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "agent.pem")
    signed = sign_manifest(manifest_for(), key)
    pem = public_key_pem(key)
    assert verify(CLIP[:-1] + b"X", signed, pem) == ["clip sha256 mismatch"]
    assert verify(CLIP + b"X", signed, pem)[0] == "clip sha256 mismatch"
    assert verify(CLIP, signed, pem, thumbnail=b"other") == [
        "thumbnail sha256 mismatch", "thumbnail size mismatch: 5 bytes, manifest says 16",
    ]  # fmt: skip
    edited = json.loads(manifest_json(signed))
    edited["covered"]["start"] = "2026-03-01T05:00:00Z"
    assert verify(CLIP, edited, pem) == ["signature invalid"]
    edited["camera"]["address"] = "10.1.2.3"  # a field the schema does not have
    assert verify(CLIP, edited, pem)[0].startswith("manifest does not match the schema: camera.address")
    other = load_or_create_key(tmp_path / "other.pem")
    problems = verify(CLIP, signed, public_key_pem(other))
    assert "signature invalid" in problems and problems[0].startswith("key id mismatch")
    unsigned = manifest_for()
    assert verify(CLIP, unsigned, pem) == ["signature missing"]


def test_verify_clip_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = load_or_create_key(tmp_path / "agent.pem")
    (tmp_path / "clip.mp4").write_bytes(CLIP)
    (tmp_path / "thumb.jpg").write_bytes(THUMB)
    (tmp_path / "manifest.json").write_bytes(manifest_json(sign_manifest(manifest_for(), key)))
    (tmp_path / "agent.pub").write_bytes(public_key_pem(key))
    args = ["--clip", str(tmp_path / "clip.mp4"), "--manifest", str(tmp_path / "manifest.json"),
            "--public-key", str(tmp_path / "agent.pub")]  # fmt: skip

    assert verify_main([*args, "--thumbnail", str(tmp_path / "thumb.jpg")]) == 0
    assert "valid" in capsys.readouterr().out
    assert verify_main([*args, "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["valid"] is True and outcome["key_id"] == key_id(key.public_key())

    (tmp_path / "clip.mp4").write_bytes(CLIP + b"tampered")
    assert verify_main([*args, "--json"]) == 1
    assert "clip sha256 mismatch" in json.loads(capsys.readouterr().out)["problems"]
    (tmp_path / "manifest.json").write_text("[1, 2")
    assert verify_main(args) == 1
    assert "INVALID" in capsys.readouterr().out

    assert verify_main(["--clip", str(tmp_path / "clip.mp4")]) == 2  # missing arguments
    assert verify_main([*args[:-1], str(tmp_path / "nope.pub")]) == 2
    (tmp_path / "agent.pub").write_text("not a key")
    assert verify_main(args) == 2


def test_covered_window_says_its_time_source_and_uncertainty() -> None:
    manifest = manifest_for()
    assert manifest.covered.time_source == "rtcp"
    assert manifest.covered.uncertainty_s is None  # not given: unknown
    window = (datetime(2026, 3, 1, 5, 2, 10, tzinfo=UTC), datetime(2026, 3, 1, 5, 2, 11, tzinfo=UTC))
    corrected = build_manifest(
        camera={"id": "gangnam-000123"}, district="gangnam", request_id="req-43", agency="112", incident="",
        purpose="test", requested=window, covered=window, wallclock_source="rtcp_corrected", clock_offset_s=7,
        wallclock_uncertainty_s=0.55, agent_id="agent-gangnam-1", software_version="0.1.0",
        objects={"clip": "c.mp4", "manifest": "c.manifest.json"},
        clip=file_digest(CLIP), thumbnail=None, complete=True,
    )  # fmt: skip
    assert corrected.covered.model_dump(mode="json") == {
        "start": "2026-03-01T05:02:10Z", "end": "2026-03-01T05:02:11Z", "complete": True,
        "time_source": "rtcp_corrected", "uncertainty_s": 0.55,
    }  # fmt: skip
