"""A live session's life in the index: what each LiveUpdate does (listed, or refused with a reason: unknown
session, another district, another camera, a forged agent, a late segment, after the stop), where the playlist
must show a gap, and how a session ends on its own (the reaper: idle, time up, incident closed, grant ended:
each a signed stop command and an audit record) and how old segments go (the janitor, on the real Ceph
gateway)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry
from types_boto3_s3 import S3Client

from collector.access.policy import Policy, load_policy
from collector.config import LiveSettings
from collector.index import live as db
from collector.live.metrics import LiveMetrics
from collector.live.reaper import Reaper
from collector.platform.manifests import ClipObjects
from contract.messages import LiveSegmentInfo, LiveUpdate
from tests.collector.conftest import POLICY
from tests.collector.platform_harness import Harness, harness
from tests.collector.test_platform_live import apply, live_commands, started

T0 = datetime.now(UTC).timestamp() - 60


@pytest.fixture
async def h(tmp_path: Path, store_url: str) -> AsyncIterator[Harness]:
    # Presigning is local: a client of a gateway that is not there signs URLs as well as any.
    presigner = boto3.client(
        "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    async with harness(tmp_path, store_url, objects=ClipObjects(presigner, "clips", None)) as built:
        yield built


def update(session: dict[str, Any], sequence: int | None = None, **kw: Any) -> LiveUpdate:
    """A LiveUpdate of `session` from its district's agent: segment `sequence` (captured from T0 + sequence s
    on, unless `start`), else a status."""
    segment = None
    if sequence is not None:
        base = f"live/gangnam/{session['session_id']}"
        segment = LiveSegmentInfo(
            sequence=sequence, object_key=f"{base}/{sequence:08d}.m4s",
            init_key=kw.pop("init", f"{base}/init-0.mp4"),
            started_at=datetime.fromtimestamp(kw.pop("start", T0 + sequence), UTC), duration_s=1.0,
            size_bytes=1000, discontinuity=kw.pop("discontinuity", False),
        )  # fmt: skip
    fields: dict[str, Any] = {
        "district": "gangnam", "session_id": session["session_id"], "camera_id": session["camera_id"],
        "agent_id": "agent-gangnam", "status": "segment" if segment else "started", "segment": segment,
        "sent_at": datetime.now(UTC), **kw,
    }  # fmt: skip
    return LiveUpdate(**fields)


def segments(h: Harness, session: dict[str, Any]) -> list[db.SegmentRow]:
    with h.store.reading() as tx:
        return db.window(tx, session["session_id"], 100)


def current(h: Harness, session: dict[str, Any]) -> db.SessionRow:
    with h.store.reading() as tx:
        row = db.session(tx, session["session_id"])
    assert row is not None
    return row


async def test_updates_that_do_not_belong_to_the_session_are_refused_with_a_reason(h: Harness) -> None:
    session = await started(h)
    now = h.clock.now
    refusals = {
        "unknown_session": update({**session, "session_id": "live-nope"}, 0),
        "session_of_other_district": update(session, 0, district="mapo", agent_id="agent-mapo"),
        "camera_mismatch": update({**session, "camera_id": "gn-office-2"}, 0),
        "unknown_agent": update(session, 0, agent_id="agent-forged"),
    }
    for reason, bad in refusals.items():
        assert apply(h.store, bad, now).refused == reason
    assert segments(h, session) == []
    assert apply(h.store, update(session, 0), now).listed is not None
    assert apply(h.store, update(session, 0), now).refused is None  # QoS 1 again: not listed twice
    assert apply(h.store, update(session, 2), now).listed is not None
    assert (
        apply(h.store, update(session, 1), now).refused == "late_segment"
    )  # its place in the playlist passed
    assert [(s.msn, s.sequence) for s in segments(h, session)] == [(0, 0), (1, 2)]


async def test_a_gap_in_sequence_time_or_init_is_a_discontinuity(h: Harness) -> None:
    session = await started(h)
    now = h.clock.now
    base = f"live/gangnam/{session['session_id']}"
    for u in (
        update(session, 0),
        update(session, 1),  # continuous
        update(session, 3),  # sequence 2 missing
        update(session, 4, start=T0 + 9),  # 5 s of capture missing
        update(session, 5, start=T0 + 10, init=f"{base}/init-1.mp4"),  # the camera's stream changed
        update(session, 6, start=T0 + 11, init=f"{base}/init-1.mp4", discontinuity=True),  # the agent says so
    ):
        apply(h.store, u, now)
    listed = segments(h, session)
    assert [s.discontinuity for s in listed] == [False, False, True, True, True, True]
    assert [s.discontinuities for s in listed] == [0, 0, 1, 2, 3, 4]
    assert [s.msn for s in listed] == list(range(6))


async def test_the_agents_stop_ends_the_session_with_its_reason(h: Harness) -> None:
    session = await started(h)
    apply(h.store, update(session, 0), h.clock.now)
    apply(h.store, update(session, status="failed", reason="no_keyframe"), h.clock.now)
    row = current(h, session)
    assert (row.state, row.stop_reason) == ("stopped", "no_keyframe")
    assert apply(h.store, update(session, 1), h.clock.now).refused == "session_stopped"
    shown = (await h.client.get(f"/v1/live/{session['session_id']}", headers=h.auth())).json()
    assert (shown["state"], shown["stop_reason"]) == ("stopped", "no_keyframe")


def reaper(h: Harness, policy: Policy | None = None, **live: Any) -> tuple[Reaper, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = LiveMetrics(registry)
    found = Reaper(
        LiveSettings(**live), policy=lambda: policy or h.platform.access.policy, signer=h.signer,
        notify_outbox=lambda: h.notified.append(1), objects=h.platform.objects, metrics=metrics,
        open_store=lambda: h.store, clock=h.clock,
    )  # fmt: skip
    return found, registry


def stops(h: Harness) -> list[tuple[str, str, str]]:
    return [
        (a["account"], a["code"], a["subjects"][0]["camera_id"])
        for a in h.audit()
        if a["action"] == "live.stop"
    ]


async def test_nobody_watching_or_time_up_ends_a_session(h: Harness) -> None:
    watched = await started(h, "gn-office")
    idle = await started(h, "gn-office-2", watched["incident_id"])
    r, registry = reaper(h, idle_stop_s=60)
    r.round(h.store)
    gauge = ("cctv_collector_live_sessions", {"agency": "police-112"})
    assert registry.get_sample_value(*gauge) == 2
    h.clock.now += 59
    assert (await h.client.get(watched["playlist_url"], headers=h.auth())).status_code == 200
    h.clock.now += 2
    assert r.reap(h.store) == 1
    assert (current(h, idle).state, current(h, idle).stop_reason) == ("stopped", "idle")
    assert current(h, watched).state == "starting"
    assert stops(h) == [("collector", "idle", "gn-office-2")]
    assert [c.action for c in live_commands(h, idle["session_id"])] == ["start", "stop"]
    until = datetime.fromisoformat(watched["expires_at"]).timestamp()
    h.clock.now = until - 10  # still watched near its end ...
    assert (await h.client.get(watched["playlist_url"], headers=h.auth())).status_code == 200
    h.clock.now = until + 0.01  # ... and not renewed
    assert r.reap(h.store) == 1
    assert current(h, watched).stop_reason == "expired"
    r.round(h.store)
    assert registry.get_sample_value(*gauge) == 0


async def test_a_closed_incident_or_an_ended_grant_ends_its_sessions(h: Harness) -> None:
    near = await started(h, "gn-office")
    farther = await started(h, "gn-office-2", near["incident_id"])
    narrow = load_policy(POLICY).model_copy(deep=True)
    narrow.agencies["police-112"].max_radius_m["112-video"] = 10  # gn-office-2 is 40 m away
    r, _ = reaper(h, narrow)
    assert r.reap(h.store) == 1
    assert current(h, farther).stop_reason == "grant_ended"
    closed = await h.client.post(f"/v1/incidents/{near['incident_id']}/close", headers=h.auth())
    assert closed.status_code == 200
    assert r.reap(h.store) == 1
    assert current(h, near).stop_reason == "incident_closed"
    assert sorted(stops(h)) == [
        ("collector", "grant_ended", "gn-office-2"),
        ("collector", "incident_closed", "gn-office"),
    ]


@pytest.mark.integration
async def test_the_janitor_deletes_segments_after_the_retention(
    tmp_path: Path, s3_bucket: tuple[S3Client, str]
) -> None:
    s3, bucket = s3_bucket
    async with harness(
        tmp_path, f"sqlite://{tmp_path / 'index.db'}", objects=ClipObjects(s3, bucket, None)
    ) as h:
        session = await started(h)
        base = f"live/gangnam/{session['session_id']}"
        keys = [f"{base}/init-0.mp4", f"{base}/00000000.m4s", f"{base}/00000001.m4s"]
        for key in keys:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        apply(h.store, update(session, 0), h.clock.now)
        r, _ = reaper(h, retention_s=10)
        h.clock.now += 5
        apply(h.store, update(session, 1), h.clock.now)
        h.clock.now += 6  # segment 0 was listed 11 s ago, segment 1 5 s ago
        assert r.clean(h.store) == 1
        assert [s.sequence for s in segments(h, session)] == [1]
        assert _exists(s3, bucket, keys) == [True, False, True]  # the init stays while segment 1 needs it
        h.clock.now += 10
        assert r.clean(h.store) == 1
        assert segments(h, session) == []
        assert _exists(s3, bucket, keys) == [False, False, False]


def _exists(s3: S3Client, bucket: str, keys: list[str]) -> list[bool]:
    found = []
    for key in keys:
        try:
            s3.head_object(Bucket=bucket, Key=key)
            found.append(True)
        except ClientError:
            found.append(False)
    return found
