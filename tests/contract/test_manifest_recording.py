"""The manifest's later additions (`source`, `recording`, `covered.gaps`): signed when present, absent (not
null) when not, so a manifest written before they existed keeps the bytes its signature covers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from agent.clips.manifest import build_manifest, file_digest, manifest_json, sign_manifest, verify
from common.signing import public_key_pem
from contract.manifest import Recording, parse_manifest
from tests.contract.golden_manifest.delivery import HERE, KEY

START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
CLIP = b"not really an mp4, only hashed"


def manifest(**extra: object) -> bytes:
    window = (START, START + timedelta(seconds=30))
    built = build_manifest(
        camera={"id": "gangnam-00002"}, district="gangnam", request_id="req-1", agency="police-112",
        incident="", purpose="", requested=window, covered=window, wallclock_source="recording",
        clock_offset_s=None, agent_id="gangnam-agent-1", software_version="t",
        objects={"clip": "c.mp4", "manifest": "c.manifest.json"}, clip=file_digest(CLIP), thumbnail=None,
        complete=False, created_at=START, **extra,  # type: ignore[arg-type]
    )  # fmt: skip
    return manifest_json(sign_manifest(built, KEY))


def test_a_recorded_clip_manifest_signs_its_source_recording_and_gaps() -> None:
    gap = (START + timedelta(seconds=10), START + timedelta(seconds=20))
    recording = Recording(token="rec-gangnam-00002", device="gangnam-nvr01", clock_offset_s=0.2)
    stored = json.loads(manifest(source="recording", recording=recording, gaps=[gap]))
    assert stored["source"] == "recording" and stored["recording"]["device"] == "gangnam-nvr01"
    assert stored["covered"]["gaps"] == [{"start": "2026-12-05T09:00:10Z", "end": "2026-12-05T09:00:20Z"}]
    key = public_key_pem(KEY)
    assert verify(CLIP, stored, key) == []
    assert verify(CLIP, parse_manifest(json.dumps(stored).encode()), key) == []  # as the collector reads it
    for forged in ({**stored, "source": "live"}, {**stored, "covered": {**stored["covered"], "gaps": None}}):
        assert verify(CLIP, forged, key) == ["signature invalid"]


def test_without_them_the_fields_are_absent_and_older_manifests_still_verify() -> None:
    stored = json.loads(manifest())
    assert "source" not in stored and "recording" not in stored and "gaps" not in stored["covered"]
    assert verify(CLIP, stored, public_key_pem(KEY)) == []
    golden = json.loads((HERE / "clip.manifest.json").read_bytes())  # written before the fields existed
    assert "source" not in golden and verify(HERE / "clip.mp4", golden, public_key_pem(KEY)) == []
