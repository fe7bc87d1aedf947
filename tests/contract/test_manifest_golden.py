"""The golden manifest is what the agent's real delivery code writes for a real clip, and what the collector
reads back: one schema (contract/manifest.py) on both sides.

The clip (golden_manifest/clip.mp4, its thumbnail and the capture's result) was captured from camsim by the
agent's capture code (golden_manifest/recapture.py). Here the agent's Pipeline delivers it: it builds and
signs the manifest (with a fixed test key and clock, so the bytes are reproducible; Ed25519 signing is
deterministic). `UPDATE_GOLDEN=1` rewrites golden_manifest/clip.manifest.json when it changes on purpose.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from agent.clips.manifest import verify
from collector.index.reconcile import manifest_row
from collector.index.store import Batch
from common.signing import public_key_pem
from contract.manifest import parse_manifest
from contract.messages import ClipUpdate
from tests.contract.golden_manifest.delivery import (
    AGENT_ID,
    HERE,
    KEY,
    RecordingUploader,
    deliver_recorded_clip,
)

GOLDEN = HERE / "clip.manifest.json"


async def test_the_golden_manifest_is_what_the_agent_writes(tmp_path: Path) -> None:
    uploader = RecordingUploader()
    succeeded = await deliver_recorded_clip(tmp_path, uploader)
    written = uploader.objects[succeeded["manifest_key"]]
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_bytes(written)
    assert written == GOLDEN.read_bytes(), "the agent writes another manifest: UPDATE_GOLDEN=1 if on purpose"
    golden = json.loads(GOLDEN.read_bytes())
    assert verify(HERE / "clip.mp4", golden, public_key_pem(KEY), thumbnail=HERE / "clip.jpg") == []
    assert b"secret" not in written and b"127.75" not in written  # the camera's address stays in the agent


async def test_the_collector_indexes_the_golden_manifest_as_the_agent_reported_it(tmp_path: Path) -> None:
    """The row reconcile builds from the manifest holds what the collector indexes from the agent's
    `succeeded` update: the same clip, keys, digest and covered window."""
    succeeded = await deliver_recorded_clip(tmp_path, RecordingUploader())
    manifest = parse_manifest(GOLDEN.read_bytes())
    keys = {manifest.objects["clip"], manifest.objects["thumbnail"]}
    from_manifest = manifest_row(manifest, succeeded["manifest_key"], present=keys)
    update = ClipUpdate(district="gangnam", agent_id=AGENT_ID, sent_at=manifest.created_at, **succeeded)
    batch = Batch()
    batch.add(update)
    [from_mqtt] = batch.clips
    same = {"source", "agency", "incident", "updated_at"}  # what only one of the two paths knows
    assert dataclasses.replace(from_manifest, **{f: getattr(from_mqtt, f) for f in same}) == from_mqtt
    assert (from_manifest.agency, from_manifest.incident) == ("police-112", "112-20261205-0001")
    assert not from_manifest.missing_object and from_manifest.source == "manifest"
