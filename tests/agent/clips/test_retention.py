"""Bounded spool and outbox: failed clips are deleted after `failed_retention_s`, request ids are forgotten
after `seen_ids_retention_s`, and nothing that still has to reach S3 is ever pruned. Time is an injected
clock, never a sleep."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from agent.clips.outbox import Outbox
from agent.clips.service import ClipService
from agent.clips.settings import ClipSettings
from agent.clips.spool import SUFFIXES, Job, JobState, Spool
from contract.messages import ClipUpdate
from tests.agent.clips.clip_harness import (
    DISTRICT,
    FakePool,
    MqttPublisher,
    UpdateCollector,
    cameras,
    clip_request,
)
from tests.agent.clips.test_service import s3_settings
from tests.services import CephS3, Mosquitto
from tests.signed_commands import command_policy

DAY = 86_400.0
# The outbox schema as the agent created it before `seen.seen_at` existed.
OLD_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE outbox (request_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, payload TEXT NOT NULL);
CREATE TABLE seen (request_id TEXT PRIMARY KEY, received_at TEXT NOT NULL);
"""


def files_of(spool: Spool, request_id: str) -> list[str]:
    return sorted(p.name for p in spool.root.iterdir() if p.name.startswith(request_id))


def spooled(spool: Spool, state: JobState, *, priority: str = "112", age_s: float = 0.0) -> Job:
    """A job in `state` with a clip, progress file and thumbnail, all last written `age_s` ago."""
    job = Job(request=clip_request(priority=priority), state=state)  # type: ignore[arg-type]
    spool.save(job)
    for suffix in SUFFIXES[:-1]:
        (spool.root / f"{job.request_id}{suffix}").write_bytes(b"x" * 1000)
    then = time.time() - age_s
    for suffix in SUFFIXES:
        os.utime(spool.root / f"{job.request_id}{suffix}", (then, then))
    return job


# spool


def test_failed_clip_files_are_kept_for_the_retention_then_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9, failed_retention_s=7 * DAY)
    failed = spooled(spool, "failed")
    now = time.time()
    assert spool.prune_failed(now + 7 * DAY - 60) == []  # still there for a person to look at
    assert len(files_of(spool, failed.request_id)) == len(SUFFIXES)
    assert spool.prune_failed(now + 7 * DAY + 60) == [failed.request_id]
    assert files_of(spool, failed.request_id) == []
    assert spool.jobs() == []


def test_clips_not_yet_uploaded_are_never_pruned(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9, failed_retention_s=DAY)
    year = 365 * DAY
    pending = [spooled(spool, state, age_s=year) for state in ("queued", "capturing", "captured")]
    pending.append(spooled(spool, "captured", priority="routine", age_s=year))
    uploaded = spooled(spool, "uploaded", age_s=year)  # the space policy's business, not this one's
    busy = spooled(spool, "failed", age_s=year)  # the service is still handling it
    gone = spooled(spool, "failed", age_s=year)
    (tmp_path / "broken.job.json").write_text("{not json")  # unknown state: left to jobs() and a person
    os.utime(tmp_path / "broken.job.json", (time.time() - year, time.time() - year))
    assert spool.prune_failed(time.time(), busy={busy.request_id}) == [gone.request_id]
    for job in [*pending, uploaded, busy]:
        assert len(files_of(spool, job.request_id)) == len(SUFFIXES), job.state
    assert (tmp_path / "broken.job.json").exists()


def test_jobs_listing_skips_a_job_pruned_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path, 10**9)
    kept, pruned = spooled(spool, "captured"), spooled(spool, "failed")
    listing = sorted(tmp_path.glob("*.job.json"))
    spool.remove(pruned.request_id)  # between the directory listing and the read, as a worker thread may
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter(listing))
    assert [job.request_id for job in spool.jobs()] == [kept.request_id]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".corrupt")]  # nothing set aside


def test_retention_settings_default_to_days_and_must_be_positive() -> None:
    settings = ClipSettings()
    assert (settings.failed_retention_s, settings.seen_ids_retention_s) == (7 * DAY, 30 * DAY)
    for key in ("failed_retention_s", "seen_ids_retention_s"):
        with pytest.raises(ValidationError, match=key):
            ClipSettings.model_validate({key: 0})


# outbox


def no_publish(update: ClipUpdate) -> None:
    return None


def test_old_request_ids_are_forgotten_and_a_recent_duplicate_is_still_recognised(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    outbox = Outbox(tmp_path / "o.sqlite3", no_publish, seen_retention_s=30 * DAY, clock=lambda: now[0])
    assert outbox.first_sight("r-old")
    now[0] += 29 * DAY
    assert outbox.first_sight("r-recent")
    now[0] += 2 * DAY
    assert outbox.prune_seen(now[0]) == 1
    assert not outbox.first_sight("r-recent")  # 2 days old: a redelivery is still a duplicate
    assert outbox.first_sight("r-old")  # 31 days old: forgotten
    outbox.close()


def test_outbox_database_without_seen_at_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    now = datetime(2027, 3, 1, tzinfo=UTC)
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    rows = [("r-old", now - timedelta(days=40)), ("r-recent", now - timedelta(days=1))]
    old.executemany("INSERT INTO seen VALUES (?, ?)", [(r, t.isoformat()) for r, t in rows])
    old.execute("INSERT INTO seen VALUES ('r-odd', 'not a date')")  # counted from the upgrade
    old.execute("INSERT INTO outbox VALUES ('r-recent', 7, '{}')")
    old.commit()
    old.close()
    for _ in range(2):  # the second open finds the new schema and changes nothing
        outbox = Outbox(path, no_publish, seen_retention_s=30 * DAY, clock=now.timestamp)
        assert outbox.pending() == 1
        assert not outbox.first_sight("r-old")
        outbox.close()
    outbox = Outbox(path, no_publish, seen_retention_s=30 * DAY, clock=now.timestamp)
    assert outbox.prune_seen(now.timestamp()) == 1
    assert outbox.first_sight("r-old")
    assert not outbox.first_sight("r-recent") and not outbox.first_sight("r-odd")
    outbox.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(seen)")]
        assert columns == ["request_id", "received_at", "seen_at"]
        assert db.execute("SELECT COUNT(*) FROM seen WHERE seen_at IS NULL").fetchone() == (0,)


# the service's own schedule (real broker, real S3 gateway)


class Clock:
    """The wall clock, moved forward at will."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """The service prunes from its retry loop (woken at least every second): wait for the effect."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not pruned in time"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def clip_service(tmp_path: Path, broker: Mosquitto, ceph: CephS3, bucket: str, *, clock: Clock,
                       pool: FakePool) -> AsyncIterator[tuple[ClipService, UpdateCollector]]:  # fmt: skip
    settings = ClipSettings(
        spool_dir=tmp_path / "spool", key_file=tmp_path / "key.pem", retry_base_s=0.2, retry_max_s=1.0,
        failed_retention_s=7 * DAY, seen_ids_retention_s=30 * DAY,
    )  # fmt: skip
    collector = UpdateCollector(broker.host, broker.port)
    publisher = MqttPublisher(broker.host, broker.port)
    service = ClipService(
        settings, s3_settings(ceph, bucket), district=DISTRICT, agent_id="agent-gangnam", pool=pool,
        publish=publisher, policy=command_policy(tmp_path / "keys"), camera_lookup=cameras(),
        metrics_registry=CollectorRegistry(), clock=clock,
    )  # fmt: skip
    await service.start()
    try:
        yield service, collector
    finally:
        await service.stop(grace_s=5)
        publisher.close()
        collector.close()


def seen_ids(spool_dir: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(spool_dir / "outbox.sqlite3")) as db:
        return {row[0] for row in db.execute("SELECT request_id FROM seen")}


@pytest.mark.integration
async def test_service_prunes_failed_clips_and_old_request_ids_on_its_own(
    tmp_path: Path, mosquitto: Mosquitto, ceph_s3: CephS3, s3_bucket: tuple[Any, str]
) -> None:
    spool = Spool(tmp_path / "spool", 10**9)
    crashed = Job(request=clip_request(), state="capturing")  # SIGKILLed before a fragment was complete
    spool.save(crashed)
    spool.clip_path(crashed.request_id).write_bytes(b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00")
    clock, pool = Clock(), FakePool()
    running = clip_service(tmp_path, mosquitto, ceph_s3, s3_bucket[1], clock=clock, pool=pool)
    async with running as (service, collector):
        result = await asyncio.to_thread(collector.wait_final, crashed.request_id)
        assert result.reason == "agent restarted before any video was captured"
        assert spool.clip_path(crashed.request_id).exists()  # kept for a person to look at
        first = clip_request()
        service.handle(first)
        assert (await asyncio.to_thread(collector.wait_final, first.request_id)).status == "succeeded"

        clock.offset_s = 8 * DAY
        await eventually(lambda: files_of(spool, crashed.request_id) == [])
        assert spool.clip_path(first.request_id).exists()  # uploaded: only the space policy evicts it

        clock.offset_s = 31 * DAY
        second = clip_request()
        service.handle(second)
        await eventually(lambda: seen_ids(spool.root) == {second.request_id})
        service.handle(second)  # a late QoS 1 redelivery of a recent command
        assert (await asyncio.to_thread(collector.wait_final, second.request_id)).status == "succeeded"
        assert pool.calls == [first.request_id, second.request_id]
        sample = service.metrics.registry.get_sample_value
        assert sample("cctv_agent_clip_requests_total", {"outcome": "duplicate"}) == 1
