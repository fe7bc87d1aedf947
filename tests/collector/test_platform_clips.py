"""Clip requests as an operator makes them: one signed command per camera in the outbox, recorded and audited
in the same transaction; windows and cameras outside the limits refused with the field at fault; the clip's
progress from the agent's updates; once delivered, its manifest checked against the district's key and an
audited presigned URL that plays the clip from the real Ceph S3 gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from types_boto3_s3 import S3Client

from collector.config import PlatformSettings
from collector.index.store import Batch
from collector.platform.manifests import ClipObjects
from common.signing import load_or_create_key, load_public_key, public_key_pem, signature_problem, signed_body
from contract.messages import ClipRequest
from tests.collector.platform_harness import Harness, harness, upload_clip
from tests.collector.test_platform_incidents import open_incident


@pytest.fixture
async def h(tmp_path: Path, store_url: str) -> AsyncIterator[Harness]:
    async with harness(tmp_path, store_url) as built:
        yield built


def window(start_s: float = -40, end_s: float = -10) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "start": (now + timedelta(seconds=start_s)).isoformat(),
        "end": (now + timedelta(seconds=end_s)).isoformat(),
    }


async def ask(h: Harness, incident_id: str, **body: Any) -> Any:
    return await h.client.post(
        f"/v1/incidents/{incident_id}/clips", json={**window(), **body}, headers=h.auth()
    )


async def test_a_request_is_recorded_signed_queued_and_audited_per_camera(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    r = await ask(h, inc["incident_id"], nearest=2)
    assert r.status_code == 202, r.text
    clips = r.json()["clips"]
    assert [(c["camera_id"], c["state"]) for c in clips] == [
        ("gn-office", "requested"),
        ("gn-office-2", "requested"),
    ]
    commands = h.outbox()
    trusted = {h.signer.key_id: load_public_key(h.signer.public_pem())}
    assert sorted(c["request_id"] for c in commands) == sorted(c["clip_id"] for c in clips)
    for raw in commands:
        cmd = ClipRequest.model_validate({k: v for k, v in raw.items() if k != "kind"})
        assert signature_problem(signed_body(cmd), cmd.signature, trusted) is None
        assert (cmd.service, cmd.priority, cmd.requested_by, cmd.agency, cmd.incident) == (
            "112-video",
            "112",
            "officer-kim",
            "police-112",
            inc["incident_id"],
        )
        assert cmd.purpose == "identify the suspect's escape route"
    requests = [a for a in h.audit() if a["action"] == "clip.request"]
    assert [(a["result"], a["subjects"][0]["camera_id"]) for a in requests] == [
        ("allowed", "gn-office"),
        ("allowed", "gn-office-2"),
    ]
    assert requests[0]["subjects"][0]["end"] - requests[0]["subjects"][0]["start"] == pytest.approx(30)
    assert h.notified
    r = await h.client.get(f"/v1/clips/{clips[0]['clip_id']}", headers=h.auth())
    assert (r.status_code, r.json()["state"], r.json()["playback"]) == (200, "requested", None)
    listed = (
        await h.client.get("/v1/clips", params={"incident": inc["incident_id"]}, headers=h.auth())
    ).json()
    assert {c["clip_id"] for c in listed["clips"]} == {c["clip_id"] for c in clips}


@pytest.mark.parametrize(
    ("offsets", "change", "code", "field"),
    [
        ((-10, -40), {}, "invalid_window", "end"),
        ((-700, -10), {}, "window_too_long", "end"),  # 112 may ask 600 s at most
        ((-90_000, -89_990), {}, "window_too_old", "start"),  # and a day back
        ((610, 650), {}, "window_in_future", "end"),  # and 600 s ahead
        ((-40, -10), {"camera_ids": ["gn-office"], "nearest": 1}, "invalid_request", "camera_ids"),
        ((-40, -10), {"camera_ids": []}, "invalid_request", "camera_ids"),
        ((-40, -10), {"start": "soon"}, "invalid_request", "start"),
    ],
)
async def test_bad_clip_requests_are_422_naming_the_field(
    h: Harness, offsets: tuple[float, float], change: dict[str, Any], code: str, field: str
) -> None:
    inc = (await open_incident(h))["incident"]
    body = {"camera_ids": ["gn-office"], **window(*offsets), **change}  # the window from now, when it runs
    r = await ask(h, inc["incident_id"], **body)
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)
    assert h.outbox() == []


async def test_unknown_cameras_incidents_and_clips_are_404(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    r = await ask(h, inc["incident_id"], camera_ids=["gn-office", "no-such-camera"])
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["field"]) == (
        404,
        "camera_not_found",
        "camera_ids",
    )
    assert (await ask(h, "inc-nope", camera_ids=["gn-office"])).status_code == 404
    r = await h.client.get("/v1/clips/clip-nope", headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"]) == (404, "clip_not_found")
    assert h.outbox() == []


async def test_a_camera_outside_the_grant_is_403_audited_and_nothing_is_sent(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    r = await ask(h, inc["incident_id"], camera_ids=["gn-office", "mp-office"])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "outside_grant")
    refusal = h.audit()[-1]
    assert (refusal["action"], refusal["result"], refusal["subjects"][0]["camera_id"]) == (
        "clip.request",
        "refused",
        "mp-office",
    )
    assert h.outbox() == [] and not [
        a for a in h.audit() if a["action"] == "clip.request" and a["result"] == "allowed"
    ]


def deliver(h: Harness, s3: S3Client, bucket: str, clip: dict[str, Any], agent_key: Path, **kw: Any) -> bytes:
    """What the district agent does: upload the clip and its signed manifest, then report (here straight
    into the index)."""
    data, update = upload_clip(s3, bucket, clip, agent_key, **kw)
    batch = Batch()
    batch.add(update)
    h.store.apply(batch)
    return data


@pytest.mark.integration
async def test_a_delivered_clip_is_verified_and_plays_through_an_audited_presigned_url(
    tmp_path: Path, s3_bucket: tuple[S3Client, str]
) -> None:
    s3, bucket = s3_bucket
    keys_dir = tmp_path / "agent-keys"
    keys_dir.mkdir()
    agent_key = tmp_path / "agent-gangnam.key"
    (keys_dir / "gangnam.pem").write_bytes(public_key_pem(load_or_create_key(agent_key)))
    settings = PlatformSettings(agent_keys_dir=keys_dir, url_expiry_s=60)
    async with harness(
        tmp_path,
        f"sqlite://{tmp_path / 'index.db'}",
        objects=ClipObjects(s3, bucket, keys_dir),
        settings=settings,
    ) as h:
        inc = (await open_incident(h))["incident"]
        good, bad = (await ask(h, inc["incident_id"], nearest=2)).json()["clips"]
        data = deliver(h, s3, bucket, good, agent_key)
        deliver(h, s3, bucket, bad, agent_key, sha256="0" * 64)  # the index and the manifest disagree

        clip = (await h.client.get(f"/v1/clips/{good['clip_id']}", headers=h.auth())).json()
        assert (clip["state"], clip["manifest_verified"], clip["size_bytes"]) == (
            "succeeded",
            True,
            len(data),
        )
        async with httpx.AsyncClient(timeout=10) as anyone:  # no token: the URL alone grants the download
            assert (await anyone.get(clip["playback"]["url"])).content == data
            assert (await anyone.get(clip["playback"]["thumbnail_url"])).content.startswith(b"\xff\xd8")
            manifest = (await anyone.get(clip["playback"]["manifest_url"])).json()
            assert (manifest["request_id"], manifest["clip"]["sha256"]) == (good["clip_id"], clip["sha256"])
        issued = [a["action"] for a in h.audit() if a["action"] in ("clip.playback", "clip.thumbnail")]
        assert issued == ["clip.playback", "clip.thumbnail"]

        clip = (await h.client.get(f"/v1/clips/{bad['clip_id']}", headers=h.auth())).json()
        assert clip["manifest_verified"] is False and "sha256" in clip["manifest_problem"]

        # Once the incident is closed, no more URLs: the refusal is on record.
        await h.client.post(f"/v1/incidents/{inc['incident_id']}/close", headers=h.auth())
        clip = (await h.client.get(f"/v1/clips/{good['clip_id']}", headers=h.auth())).json()
        assert (clip["playback"], clip["playback_refused"]) == (None, "incident_closed")
        assert (h.audit()[-1]["action"], h.audit()[-1]["result"]) == ("clip.playback", "refused")
