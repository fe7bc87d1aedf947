"""The store suite, run on SQLite and on a real PostgreSQL 15."""

from __future__ import annotations

import dataclasses
import random
import uuid
from pathlib import Path

import psycopg
import pytest
from pydantic import BaseModel

from collector.index.store import (
    Batch,
    DeadLetter,
    Store,
    StoreRejectedError,
    StoreUnavailableError,
    open_store,
)
from collector.index.store_postgres import BULK_MIN_ROWS
from collector.index.store_sql import _migrations
from tests.collector.conftest import agent, at, clip, forced, health, meta, status
from tests.collector.pg import PgService


def write(store: Store, *messages: object) -> None:
    batch = Batch()
    for m in messages:
        batch.add(m)  # type: ignore[arg-type]
    store.apply(batch)


def test_migrations_are_recorded_and_applied_once(store_url: str) -> None:
    s = open_store(store_url)
    try:
        assert s.schema_version() == 0
        shipped = [version for version, _ in _migrations(s.engine)]  # type: ignore[attr-defined]
        assert shipped[:5] == [1, 2, 3, 4, 5]
        assert s.migrate() == shipped
        assert s.schema_version() == shipped[-1]
        assert s.migrate() == []
    finally:
        s.close()


def test_meta_status_and_agents_are_indexed(store: Store) -> None:
    write(store, agent(), meta("cam-1"), status("cam-1", "degraded", 1, ["low_fps"]))
    [cam] = store.cameras()
    assert (cam.camera_id, cam.district, cam.state, cam.reasons) == (
        "cam-1",
        "gangnam",
        "degraded",
        ["low_fps"],
    )
    assert (cam.name, cam.manufacturer, cam.model) == ("cam-1 crossing", "Hanwha", "XNO-6080R")
    assert cam.last_seen == at(1).timestamp()
    assert store.known_agents() == {"gangnam": "agent-gangnam"}


def test_duplicate_delivery_changes_nothing(store: Store) -> None:
    messages = [
        agent(),
        meta("cam-1"),
        status("cam-1", "online", 0),
        status("cam-1", "offline", 5),
        clip("req-1", "succeeded", 6, object_key="clips/req-1.mp4"),
    ]
    write(store, *messages)
    before = (store.cameras(), store.history("gangnam", 0, at(60).timestamp()), store.clips())
    write(store, *messages)
    write(store, *messages[2:3])
    assert (store.cameras(), store.history("gangnam", 0, at(60).timestamp()), store.clips()) == before


def test_history_has_a_row_per_transition_only(store: Store) -> None:
    write(store, status("cam-1", "online", 0), status("cam-1", "online", 1), status("cam-1", "offline", 2))
    write(store, health({"cam-1": "offline"}, 3), health({"cam-1": "online"}, 4))
    write(store, status("cam-1", "online", 4), status("cam-1", "online", 4, ["reboot_seen"]))
    states = [(t.state, t.at) for t in store.history("gangnam", 0, at(10).timestamp())]
    assert states == [
        ("online", at(0).timestamp()),
        ("offline", at(2).timestamp()),
        ("online", at(4).timestamp()),
    ]  # the reasons change at minute 4 replaced that row


def test_an_older_report_never_overrides_a_newer_one(store: Store) -> None:
    write(store, status("cam-1", "offline", 10))
    write(store, status("cam-1", "online", 5))
    [cam] = store.cameras()
    assert cam.state == "offline"
    assert [t.state for t in store.history("gangnam", 0, at(60).timestamp())] == ["offline"]


def test_history_window_includes_the_state_at_its_start(store: Store) -> None:
    write(store, status("cam-1", "online", 0), status("cam-1", "offline", 30), status("cam-2", "online", 40))
    rows = store.history("gangnam", at(35).timestamp(), at(60).timestamp())
    assert [(t.camera_id, t.state) for t in rows] == [("cam-1", "offline"), ("cam-2", "online")]
    assert [t.camera_id for t in store.history("gangnam", 0, at(60).timestamp(), "cam-2")] == ["cam-2"]


def test_health_snapshot_updates_cameras_in_bulk_and_counts_states(store: Store) -> None:
    write(store, meta("cam-1"), meta("cam-2"))
    write(store, health({"cam-1": "online", "cam-2": "offline", "cam-3": "online"}, 5))
    assert {c.camera_id: c.state for c in store.cameras()} == {
        "cam-1": "online",
        "cam-2": "offline",
        "cam-3": "online",
    }
    assert store.health_counts("gangnam") == {"online": 2, "offline": 1}
    write(store, health({"cam-1": "offline", "cam-2": "offline", "cam-3": "offline"}, 6))
    assert store.health_counts("gangnam") == {"offline": 3}
    assert [c.camera_id for c in store.cameras(state="offline", district="gangnam")] == [
        "cam-1",
        "cam-2",
        "cam-3",
    ]


def test_clip_status_never_regresses_from_final(store: Store) -> None:
    write(store, clip("req-1", "accepted", 0), clip("req-1", "uploading", 2))
    write(store, clip("req-1", "succeeded", 3, object_key="clips/req-1.mp4", size_bytes=10))
    write(store, clip("req-1", "capturing", 4), clip("req-1", "uploading", 5))
    [row] = store.clips()
    assert (row.status, row.object_key, row.size_bytes) == ("succeeded", "clips/req-1.mp4", 10)


def test_a_late_failed_never_replaces_succeeded(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    write(store, clip("req-1", "succeeded", 3, object_key="clips/req-1.mp4", size_bytes=10))
    write(store, clip("req-1", "failed", 4, reason="upload aborted"))
    write(store, clip("req-2", "succeeded", 3, object_key="clips/req-2.mp4"), clip("req-2", "failed", 4))
    rows = {c.request_id: c for c in store.clips()}
    assert (rows["req-1"].status, rows["req-1"].reason, rows["req-1"].size_bytes) == ("succeeded", None, 10)
    assert rows["req-2"].status == "succeeded"
    ignored = [r for r in caplog.records if getattr(r, "reason", None) == "failed_after_succeeded"]
    assert sorted(getattr(r, "request_id", None) for r in ignored) == ["req-1", "req-2"]


def test_a_clip_delivered_after_failing_is_succeeded_without_the_failure(store: Store) -> None:
    write(store, clip("req-1", "failed", 1, reason="waiting for storage: timeout"))
    write(store, clip("req-1", "succeeded", 2, object_key="clips/req-1.mp4"))
    [row] = store.clips()
    assert (row.status, row.reason, row.object_key) == ("succeeded", None, "clips/req-1.mp4")


def test_qos1_redelivery_of_clip_updates_changes_nothing(store: Store) -> None:
    updates = [clip("req-1", "capturing", 1), clip("req-1", "succeeded", 2, object_key="k", size_bytes=7),
               clip("req-2", "failed", 1, reason="camera offline")]  # fmt: skip
    write(store, *updates)
    once = store.clips()
    write(store, *updates, *updates)  # each delivered again, twice
    write(store, updates[0])  # a stale duplicate alone
    assert store.clips() == once


def test_missing_flag_and_replace(store: Store) -> None:
    write(store, clip("req-1", "succeeded", 1, object_key="k1"), clip("req-2", "failed", 1, reason="timeout"))
    store.set_missing(["req-1"], True)
    assert {c.request_id: c.missing_object for c in store.clips()} == {"req-1": True, "req-2": False}
    [fresh] = [c for c in store.clips() if c.request_id == "req-1"]
    assert store.replace_clips([fresh]) == 2
    assert store.clips() == [fresh]


def test_a_replacement_that_fails_keeps_the_old_index(store: Store) -> None:
    write(store, clip("req-1", "succeeded", 1, object_key="k1"), clip("req-2", "failed", 1, reason="timeout"))
    before = store.clips()
    broken = dataclasses.replace(before[0], request_id="req-9", camera_id=None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"(?i)not null|null value"):
        store.replace_clips([before[0], broken])
    assert store.clips() == before


@pytest.mark.integration
def test_big_snapshots_on_postgres_index_what_sqlite_does(pg_service: PgService, tmp_path: Path) -> None:
    """PostgreSQL takes a snapshot of 500+ distinct cameras through COPY and set-based SQL; SQLite runs the
    per-row statements. Both must end with the same cameras and the same history."""
    rng = random.Random(7)
    ids = [f"cam-{i}" for i in range(BULK_MIN_ROWS + 100)]
    states = ["online", "offline", "degraded"]
    batches: list[list[object]] = [[meta(c) for c in ids[:50]]]
    for minutes in (5, 9, 7, 12):  # the snapshot at minute 7 arrives late: it must change nothing
        batches.append([health({c: rng.choice(states) for c in ids}, minutes)])
        batches.append([status(rng.choice(ids), rng.choice(states), minutes + 0.5) for _ in range(20)])
    stores = [open_store(f"sqlite://{tmp_path / 'ref.db'}"), open_store(pg_service.new_database("bulk"))]
    try:
        for s in stores:
            s.migrate()
            for messages in batches:
                write(s, *messages)
        reference, bulk = ((s.cameras(), s.history("gangnam", 0, at(60).timestamp())) for s in stores)
        assert len(reference[0]) == len(ids)
        assert bulk == reference
    finally:
        for s in stores:
            s.close()


@pytest.mark.integration
def test_postgres_store_reconnects_after_losing_its_connection(pg_service: PgService) -> None:
    """A PostgreSQL restart or failover cuts the collector's connection: the batch in flight fails (the writer
    retries it) and the store carries on with a new connection instead of failing for ever."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    store = open_store(pg_service.new_database(name))
    try:
        store.migrate()
        write(store, status("cam-1", "online", 0))
        with psycopg.connect(pg_service.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
        with pytest.raises(StoreUnavailableError):  # transient: never dead-lettered
            write(store, status("cam-1", "offline", 1))
        write(store, status("cam-1", "offline", 1))  # the writer's retry
        assert [(c.camera_id, c.state) for c in store.cameras()] == [("cam-1", "offline")]
        with psycopg.connect(pg_service.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
        assert [c.state for c in store.cameras()] == ["offline"]  # a read retries once by itself
    finally:
        store.close()


def test_camera_counts_and_agent_states_for_dashboards(store: Store) -> None:
    write(store, agent(), agent("jongno", "agent-jongno"), meta("cam-0"))
    write(store, status("cam-1", "online", 1), status("cam-2", "offline", 1), status("cam-3", "online", 1))
    write(store, status("jn-1", "degraded", 1, district="jongno", agent_id="agent-jongno"))
    assert store.camera_counts() == {
        ("gangnam", "online"): 2,
        ("gangnam", "offline"): 1,
        ("gangnam", "unknown"): 1,  # known from its metadata, no status yet
        ("jongno", "degraded"): 1,
    }
    assert store.agent_states() == {"gangnam": "online", "jongno": "online"}


def test_a_camera_never_changes_district(store: Store) -> None:
    """Even past the writer's gate, meta, status, health and clips of another district leave a camera where it
    is: its district, agent, state and history stay those of its own district."""
    write(store, meta("cam-1"), status("cam-1", "online", 1), clip("req-1", "accepted", 1))
    intruder = {"district": "mapo", "agent_id": "agent-mapo"}
    write(store, meta("cam-1", name="moved", **intruder, updated_at=at(5)))
    write(store, status("cam-1", "offline", 6, **intruder))
    write(store, health({"cam-1": "unauthorized"}, 7, **intruder))
    write(store, clip("req-1", "failed", 8).model_copy(update=intruder))
    [cam] = store.cameras()
    assert (cam.district, cam.agent_id, cam.name, cam.state) == (
        "gangnam",
        "agent-gangnam",
        "cam-1 crossing",
        "online",
    )
    assert [(t.district, t.state) for t in store.history("gangnam", 0, 2e9)] == [("gangnam", "online")]
    assert store.history("mapo", 0, 2e9) == []
    assert [(c.district, c.status) for c in store.clips()] == [("gangnam", "accepted")]


@pytest.mark.parametrize(
    "bad",
    [forced(agent(), cameras=2**64), forced(clip("req-1", "succeeded", 1), size_bytes=2**70)],
    ids=["cameras beyond 64 bits", "size beyond 64 bits"],
)
def test_a_value_the_database_cannot_hold_is_rejected_not_unavailable(store: Store, bad: BaseModel) -> None:
    """What the contract would refuse, forced past it: the store says the batch can never succeed."""
    with pytest.raises(StoreRejectedError) as err:
        write(store, meta("cam-1"), bad)
    assert err.value.reason == "out_of_range"
    write(store, meta("cam-1"))  # the connection is usable afterwards
    assert [c.camera_id for c in store.cameras()] == ["cam-1"]


def test_dead_letters_are_kept_newest_first_within_the_bound(store: Store) -> None:
    letters = [
        DeadLetter(f"cctv/v1/gangnam/clip/r{i}", b"{\x00}", "out_of_range", "bad\x00 value", i)
        for i in range(5)
    ]
    store.dead_letter(letters[:3], keep=10)
    store.dead_letter(letters[3:], keep=3)
    kept = store.dead_letters()
    assert [d.topic for d in kept] == [f"cctv/v1/gangnam/clip/r{i}" for i in (2, 3, 4)]
    assert kept[0].payload == b"{\x00}" and kept[0].error == "bad value"


@pytest.mark.integration
def test_text_postgresql_cannot_hold_is_rejected_not_unavailable(pg_service: PgService) -> None:
    store = open_store(pg_service.new_database(f"t_{uuid.uuid4().hex[:12]}"))
    try:
        store.migrate()
        with pytest.raises(StoreRejectedError) as err:
            write(store, forced(meta("cam-1"), name="a\x00b"))
        assert err.value.reason == "invalid_value"
    finally:
        store.close()


def test_cameras_know_the_district_their_position_lies_in(store: Store) -> None:
    write(
        store,
        meta("cam-coex", lat=37.5116, lon=127.0595),  # COEX, Gangnam
        meta("cam-border", lat=37.4840, lon=127.0160),  # reported by Gangnam's agent, stands in Seocho
        meta("cam-nowhere"),  # no position
        meta("cam-gwacheon", lat=37.4292, lon=126.9876),  # outside Seoul
    )
    places = {c.camera_id: (c.district, c.place_district) for c in store.cameras()}
    assert places == {
        "cam-coex": ("gangnam", "gangnam"),
        "cam-border": ("gangnam", "seocho"),
        "cam-nowhere": ("gangnam", None),
        "cam-gwacheon": ("gangnam", None),
    }
    write(store, meta("cam-nowhere", lat=37.5126, lon=127.1025, updated_at=at(5)))  # now placed: Songpa
    assert {c.camera_id: c.place_district for c in store.cameras()}["cam-nowhere"] == "songpa"
