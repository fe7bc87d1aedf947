"""What /healthz says about ingest, from the writer's reports (a fake clock: no waiting)."""

from __future__ import annotations

from collections import Counter

from collector.ingest.health import IngestHealth
from collector.ingest.writer import WriterStats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_store_is_failing_from_the_first_failed_attempt_until_a_commit() -> None:
    clock = Clock()
    health = IngestHealth(stall_after_s=30, clock=clock)
    health.note(WriterStats(store_errors=1, store_error="connection refused", held=7))
    clock.now += 5
    health.note(WriterStats(store_errors=1, store_error="connection refused", held=7))
    assert health.held() == 7
    assert health.status(queued=7) == {
        "store_ok": False,
        "store_error": "connection refused",
        "store_failing_s": 5.0,
        "ingest_stalled": False,
    }
    health.note(WriterStats(written=7))
    assert health.status(queued=0)["store_ok"] and health.held() == 0


def test_ingest_is_stalled_when_messages_wait_without_progress() -> None:
    clock = Clock()
    health = IngestHealth(stall_after_s=30, clock=clock)
    clock.now += 3600  # idle for an hour: a message arriving now is not a stall
    assert not health.status(queued=1)["ingest_stalled"]
    clock.now += 31
    assert health.status(queued=1)["ingest_stalled"]
    health.note(WriterStats(dead_letters=Counter({"out_of_range": 1})))  # progress, of a kind
    assert not health.status(queued=1)["ingest_stalled"]
    clock.now += 31
    assert not health.status(queued=0)["ingest_stalled"]
