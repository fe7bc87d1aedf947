"""Live view through the API as an operator uses it: a session started on a granted camera (its signed
command, record and audit entry together), its playlist built from the segments the agent announced (parsed
by `m3u8`, segments downloadable from the real Ceph gateway through the presigned URLs), renew, stop and save,
and the refusals: a camera outside the grant (403, audited), a session of another account or none (404), the
agency's limit (429 with Retry-After), a closed incident (409)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import m3u8
import pytest
from types_boto3_s3 import S3Client

from collector.config import LiveSettings
from collector.index.store import Store
from collector.live import updates
from collector.platform.manifests import ClipObjects
from common.signing import load_public_key, signature_problem, signed_body
from contract.messages import LiveRequest, LiveSegmentInfo, LiveUpdate
from tests.collector.conftest import POLICY
from tests.collector.platform_harness import Harness, harness
from tests.collector.test_platform_incidents import open_incident

pytestmark = pytest.mark.integration  # the Ceph S3 gateway serves the segments
START = datetime.now(UTC).timestamp() - 30


@pytest.fixture
async def h(tmp_path: Path, store_url: str, s3_bucket: tuple[S3Client, str]) -> AsyncIterator[Harness]:
    s3, bucket = s3_bucket
    async with harness(tmp_path, store_url, objects=ClipObjects(s3, bucket, None)) as built:
        yield built


async def start(h: Harness, incident_id: str, camera_id: str = "gn-office", **kw: Any) -> httpx.Response:
    body = {"camera_id": camera_id, **kw}
    return await h.client.post(f"/v1/incidents/{incident_id}/live", json=body, headers=h.auth())


async def started(h: Harness, camera_id: str = "gn-office", incident_id: str | None = None) -> dict[str, Any]:
    """A session of `camera_id` under `incident_id` (default: a new incident at the Gangnam office)."""
    incident_id = incident_id or (await open_incident(h))["incident"]["incident_id"]
    r = await start(h, incident_id, camera_id)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def live_commands(h: Harness, session_id: str) -> list[LiveRequest]:
    """The live commands queued for a session, signature checked, by action."""
    trusted = {h.signer.key_id: load_public_key(h.signer.public_pem())}
    found = []
    for raw in h.outbox():
        if raw.pop("kind") == "live" and raw["session_id"] == session_id:
            cmd = LiveRequest.model_validate(raw)
            assert signature_problem(signed_body(cmd), cmd.signature, trusted) is None
            found.append(cmd)
    return found


def announce(
    h: Harness, s3: S3Client, bucket: str, session: dict[str, Any], sequence: int, **kw: Any
) -> bytes:
    """What the district agent does with one GOP: upload it (and the init once), then announce it. Segment n
    was captured from START + n s on."""
    base = f"live/gangnam/{session['session_id']}"
    body = f"segment {sequence}".encode() * 50
    if sequence == 0:
        s3.put_object(Bucket=bucket, Key=f"{base}/init-0.mp4", Body=b"init")
    s3.put_object(Bucket=bucket, Key=f"{base}/{sequence:08d}.m4s", Body=body)
    info = LiveSegmentInfo(
        sequence=sequence, object_key=f"{base}/{sequence:08d}.m4s", init_key=f"{base}/init-0.mp4",
        started_at=datetime.fromtimestamp(START + sequence, UTC), duration_s=1.0,
        size_bytes=len(body), **kw,
    )  # fmt: skip
    update = LiveUpdate(
        district="gangnam", session_id=session["session_id"], camera_id=session["camera_id"],
        agent_id="agent-gangnam", status="segment", segment=info, sent_at=datetime.now(UTC),
    )  # fmt: skip
    apply(h.store, update, h.clock.now)
    return body


def apply(store: Store, update: LiveUpdate, now: float) -> updates.Outcome:
    with store.transaction() as tx:
        return updates.apply(tx, update, now)


async def playlist(h: Harness, session: dict[str, Any], **headers: str) -> httpx.Response:
    return await h.client.get(session["playlist_url"], headers=headers or h.auth())


async def test_a_session_is_recorded_commanded_and_audited_together(h: Harness) -> None:
    session = await started(h)
    assert session["session_id"].startswith("live-")
    assert (session["camera_id"], session["stream"], session["state"], session["stop_reason"]) == (
        "gn-office", "sub", "starting", None,
    )  # fmt: skip
    assert session["playlist_url"] == f"/v1/live/{session['session_id']}/index.m3u8"
    expires = datetime.fromisoformat(session["expires_at"]).timestamp()
    assert expires == pytest.approx(h.clock.now + 600)  # the policy's live maximum
    (cmd,) = live_commands(h, session["session_id"])
    assert (cmd.action, cmd.camera_id, cmd.stream, cmd.district, cmd.priority, cmd.requested_by) == (
        "start", "gn-office", "sub", "gangnam", "112", "officer-kim",
    )  # fmt: skip
    assert cmd.until.timestamp() == pytest.approx(expires)
    assert h.notified
    (record,) = [a for a in h.audit() if a["action"] == "live.start"]
    assert (record["result"], record["account"], record["subjects"][0]["camera_id"]) == (
        "allowed", "officer-kim", "gn-office",
    )  # fmt: skip
    again = await h.client.get(f"/v1/live/{session['session_id']}", headers=h.auth())
    assert again.json() == session


async def test_the_playlist_lists_announced_segments_that_download_through_their_urls(
    h: Harness, s3_bucket: tuple[S3Client, str]
) -> None:
    s3, bucket = s3_bucket
    session = await started(h)
    empty = await playlist(h, session)
    assert (empty.status_code, empty.headers["content-type"]) == (200, "application/vnd.apple.mpegurl")
    assert m3u8.loads(empty.text).segments == []
    bodies = [announce(h, s3, bucket, session, n) for n in range(3)]
    r = await playlist(h, session)
    pl = m3u8.loads(r.text)
    assert (pl.version, pl.media_sequence, pl.target_duration, pl.is_endlist) == (7, 0, 1, False)
    assert all(s.current_program_date_time is not None for s in pl.segments)
    async with httpx.AsyncClient(timeout=10) as player:  # no token: the presigned URLs are the credential
        assert (await player.get(pl.segments[0].init_section.uri)).content == b"init"
        assert [(await player.get(s.uri)).content for s in pl.segments] == bodies
    shown = (await h.client.get(f"/v1/live/{session['session_id']}", headers=h.auth())).json()
    assert shown["state"] == "live"


async def test_the_window_slides_and_a_hole_in_the_sequence_is_a_discontinuity(
    h: Harness, s3_bucket: tuple[S3Client, str]
) -> None:
    s3, bucket = s3_bucket
    session = await started(h)
    for n in range(7):
        announce(h, s3, bucket, session, n)
    announce(h, s3, bucket, session, 9)  # 7 and 8 never arrived (lost in an uplink outage)
    pl = m3u8.loads((await playlist(h, session)).text)
    assert pl.media_sequence == 2 and len(pl.segments) == 6  # the window: live.playlist_segments
    assert [s.discontinuity for s in pl.segments] == [False] * 5 + [True]
    assert pl.segments[-1].uri.split("?")[0].endswith("00000009.m4s")


async def test_a_camera_outside_the_grant_is_refused_and_audited(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    r = await start(h, inc["incident_id"], "gn-seolleung")  # 1.4 km away, the grant is 1 km
    assert (r.status_code, r.json()["error"]["code"]) == (403, "outside_grant")
    refused = [a for a in h.audit() if a["result"] == "refused"]
    assert [(a["action"], a["code"], a["subjects"][0]["camera_id"]) for a in refused] == [
        ("live", "outside_grant", "gn-seolleung")
    ]
    assert not [c for c in h.outbox() if c["kind"] == "live"]


async def test_unknown_camera_and_closed_incident(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    r = await start(h, inc["incident_id"], "gn-nowhere")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "camera_not_found")
    r = await h.client.post(f"/v1/incidents/{inc['incident_id']}/close", headers=h.auth())
    assert r.status_code == 200, r.text
    r = await start(h, inc["incident_id"])
    assert (r.status_code, r.json()["error"]["code"]) == (409, "incident_closed")


async def test_a_session_of_another_account_or_none_is_not_found(h: Harness) -> None:
    session = await started(h)
    sid = session["session_id"]
    colleague = h.auth(sub="officer-park")  # same agency, another account
    for method, path in (
        ("GET", f"/v1/live/{sid}"), ("GET", f"/v1/live/{sid}/index.m3u8"), ("POST", f"/v1/live/{sid}/renew"),
        ("POST", f"/v1/live/{sid}/stop"), ("GET", "/v1/live/live-00000000000000000000"),
    ):  # fmt: skip
        headers = h.auth() if "live-0000" in path else colleague
        r = await h.client.request(method, path, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "live_session_not_found"), path
    r = await h.client.post(f"/v1/live/{sid}/save", headers=colleague, json=_range(-5, -2))
    assert r.status_code == 404
    assert [c.action for c in live_commands(h, sid)] == ["start"]


async def test_renew_extends_and_stop_ends_the_session(h: Harness, s3_bucket: tuple[S3Client, str]) -> None:
    s3, bucket = s3_bucket
    session = await started(h)
    sid = session["session_id"]
    announce(h, s3, bucket, session, 0)
    h.clock.now += 300
    renewed = (await h.client.post(f"/v1/live/{sid}/renew", headers=h.auth())).json()
    assert datetime.fromisoformat(renewed["expires_at"]).timestamp() == pytest.approx(h.clock.now + 600)
    stopped = (await h.client.post(f"/v1/live/{sid}/stop", headers=h.auth())).json()
    assert (stopped["state"], stopped["stop_reason"]) == ("stopped", "stopped_by_request")
    again = await h.client.post(f"/v1/live/{sid}/stop", headers=h.auth())
    assert again.json() == stopped  # stopping twice changes nothing and is recorded once
    commands = {c.action: c for c in live_commands(h, sid)}
    assert sorted(commands) == ["renew", "start", "stop"]
    assert commands["renew"].until.timestamp() == pytest.approx(h.clock.now + 600)
    actions = [a["action"] for a in h.audit() if a["action"].startswith("live.")]
    assert actions == ["live.start", "live.renew", "live.stop"]
    pl = m3u8.loads((await playlist(h, session)).text)
    assert pl.is_endlist and len(pl.segments) == 1
    r = await h.client.post(f"/v1/live/{sid}/renew", headers=h.auth())
    assert (r.status_code, r.json()["error"]["code"]) == (409, "session_stopped")


async def test_saving_a_range_requests_an_ordinary_clip(h: Harness) -> None:
    session = await started(h)
    window = _range(-8, -2)
    r = await h.client.post(f"/v1/live/{session['session_id']}/save", headers=h.auth(), json=window)
    assert r.status_code == 201, r.text
    clip = r.json()
    assert (clip["camera_id"], clip["state"], clip["incident_id"]) == (
        "gn-office",
        "requested",
        session["incident_id"],
    )
    same = (await h.client.get(f"/v1/clips/{clip['clip_id']}", headers=h.auth())).json()
    assert same == clip  # the clip object GET /v1/clips/{id} returns
    (cmd,) = [c for c in h.outbox() if c["kind"] == "clip"]
    assert (cmd["request_id"], cmd["camera_id"]) == (clip["clip_id"], "gn-office")
    assert datetime.fromisoformat(cmd["start"]) == datetime.fromisoformat(window["start"])
    (saved,) = [a for a in h.audit() if a["action"] == "live.save"]
    assert saved["subjects"][0]["end"] - saved["subjects"][0]["start"] == pytest.approx(6)


async def test_the_agency_limit_answers_429_until_a_session_ends(
    tmp_path: Path, store_url: str, s3_bucket: tuple[S3Client, str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.read_text().replace("live_max_sessions = 60", "live_max_sessions = 1"))
    s3, bucket = s3_bucket
    async with harness(tmp_path, store_url, policy=policy, objects=ClipObjects(s3, bucket, None),
                       live=LiveSettings(idle_stop_s=60)) as h:  # fmt: skip
        first = await started(h)
        h.clock.now += 20
        r = await start(h, first["incident_id"], "gn-office-2")
        assert (r.status_code, r.json()["error"]["code"]) == (429, "live_limit")
        assert r.headers["Retry-After"] == "40"  # the first ends when idle for 60 s, unless watched
        refused = [a for a in h.audit() if a["result"] == "refused"]
        assert [(a["action"], a["code"]) for a in refused] == [("live.start", "live_limit")]
        await h.client.post(f"/v1/live/{first['session_id']}/stop", headers=h.auth())
        assert (await start(h, first["incident_id"], "gn-office-2")).status_code == 201


def _range(start_s: float, end_s: float) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "start": (now + timedelta(seconds=start_s)).isoformat(),
        "end": (now + timedelta(seconds=end_s)).isoformat(),
    }


async def test_players_outside_a_browser_send_the_token_as_a_cookie_for_the_playlist_only(
    tmp_path: Path, store_url: str, s3_bucket: tuple[S3Client, str]
) -> None:
    """ffmpeg sends its extra headers to the presigned segment URLs too (S3 refuses a second credential): the
    playlist takes the token from the `cctv_token` cookie, and counts fetches per session, not per account."""
    s3, bucket = s3_bucket
    objects = ClipObjects(s3, bucket, None)
    async with harness(tmp_path, store_url, objects=objects, live=LiveSettings(playlist_per_min=3)) as h:
        session = await started(h)
        cookie = {"Cookie": f"cctv_token={h.token()}"}
        for _ in range(3):
            assert (await playlist(h, session, **cookie)).status_code == 200
        throttled = await playlist(h, session, **cookie)
        assert (throttled.status_code, throttled.json()["error"]["code"]) == (429, "rate_limited")
        assert int(throttled.headers["Retry-After"]) >= 1
        shown = await h.client.get(f"/v1/live/{session['session_id']}", headers=h.auth())
        assert shown.status_code == 200  # the account's own rate is untouched
        elsewhere = await h.client.get(f"/v1/live/{session['session_id']}", headers=cookie)
        assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (401, "token_missing")
