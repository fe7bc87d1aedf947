"""The audit chain in the index: each record chained to the one before, with its action, append-only."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from collector.audit.chain import (
    GENESIS,
    AuditRecord,
    AuditSubject,
    Head,
    append,
    append_many,
    chain_hash,
    entries,
    head,
)
from collector.index.store import Store, StoreError, open_store
from tests.collector.audit_helpers import T0, fill, record


def assert_one_chain(store: Store, n: int) -> None:
    prev = Head(0, GENESIS)
    chain = list(entries(store))
    assert [e.seq for e in chain] == list(range(1, n + 1))
    for entry in chain:
        assert entry.prev_hash == prev.hash
        assert entry.hash == chain_hash(prev.hash, entry.document)
        prev = Head(entry.seq, entry.hash)
    assert head(store) == prev


def test_each_record_is_chained_to_the_previous_hash_from_genesis(store: Store) -> None:
    assert head(store) == Head(0, "0" * 64)

    heads = fill(store, 3)

    assert [h.seq for h in heads] == [1, 2, 3]
    assert_one_chain(store, 3)
    assert head(store) == heads[-1]


def test_appending_several_at_once_makes_the_chain_one_by_one_makes(store: Store, tmp_path: Path) -> None:
    records = [record(i) for i in range(6)]
    one_by_one = open_store(f"sqlite://{tmp_path / 'one_by_one.db'}")
    one_by_one.migrate()
    try:
        for r in records:
            with one_by_one.transaction() as tx:
                append(tx, r)
        expected = [(e.seq, e.prev_hash, e.hash, e.document) for e in entries(one_by_one)]
    finally:
        one_by_one.close()

    with store.transaction() as tx:
        append(tx, records[0])
    with store.transaction() as tx:
        last = append_many(tx, records[1:])

    assert [(e.seq, e.prev_hash, e.hash, e.document) for e in entries(store)] == expected
    assert last == head(store) == Head(6, expected[-1][2])
    assert_one_chain(store, 6)


def test_a_record_reads_back_as_it_was_written(store: Store) -> None:
    written = record(
        7,
        purpose="실종 아동 수색",
        subjects=[AuditSubject(camera_id="cam-9", district="mapo", start=T0, end=1_700_000_030)],
        detail={"request_id": "r-1", "nested": {"b": [1, 2.5, None]}, "a": "=1+1"},
        incident=None,
    )
    with store.transaction() as tx:
        append(tx, written)

    (entry,) = entries(store)

    assert entry.record() == written
    assert entry.record().subjects[0].start == T0.timestamp()  # datetimes are kept as Unix seconds
    assert entry.hash == chain_hash(GENESIS, entry.document)


def test_a_record_commits_or_rolls_back_with_its_action(store: Store) -> None:
    fill(store, 1)
    with pytest.raises(StoreError), store.transaction() as tx:
        append(tx, record(1))
        tx.execute("INSERT INTO no_such_table VALUES (1)")  # the action fails after its record was appended

    assert head(store).seq == 1
    assert [e.seq for e in entries(store)] == [1]
    fill(store, 1)
    assert_one_chain(store, 2)


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET purpose = 'nothing' WHERE seq = 1", "DELETE FROM audit_log"]
)
def test_the_log_refuses_changes_and_deletions(store: Store, statement: str) -> None:
    fill(store, 2)
    with pytest.raises(StoreError, match="append-only"), store.transaction() as tx:
        tx.execute(statement)

    assert [e.record().purpose for e in entries(store)] == ["missing child search"] * 2
    assert_one_chain(store, 2)


def test_concurrent_appends_from_several_connections_form_one_chain(store: Store, store_url: str) -> None:
    threads, per_thread = 4, 15

    def writer(worker: int) -> None:
        own = open_store(store_url)
        try:
            for i in range(per_thread):
                with own.transaction() as tx:
                    append(tx, record(i, account=f"officer-{worker}"))
        finally:
            own.close()

    workers = [threading.Thread(target=writer, args=(w,)) for w in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    assert_one_chain(store, threads * per_thread)
    accounts = [e.record().account for e in entries(store)]
    assert sorted(set(accounts)) == [f"officer-{w}" for w in range(threads)]


def test_an_audit_record_rejects_unknown_fields_and_results() -> None:
    with pytest.raises(ValueError, match="result"):
        AuditRecord(account="a", agency="b", action="clip.request", result="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra"):
        AuditRecord(account="a", agency="b", action="x", result="allowed", camera="c")  # type: ignore[call-arg]
