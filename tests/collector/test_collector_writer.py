"""The writer's batch isolation and gate, on SQLite and a real PostgreSQL: a message the index refuses is
dead-lettered alone, an unavailable store is waited for (never dead-lettered), a camera stays in its
district."""

from __future__ import annotations

import threading
from collections import Counter

from pydantic import BaseModel

from collector.config import CollectorSettings
from collector.index.store import Batch, Store, StoreUnavailableError
from collector.ingest.writer import BatchWriter, Received, WriterStats
from contract.codec import encode
from contract.messages import AnyMessage
from tests.collector.conftest import agent, clip, forced, health, meta, status


def received(message: BaseModel) -> Received:
    d = encode(message)  # type: ignore[arg-type]
    return Received(d.topic, d.payload, message)  # type: ignore[arg-type]


def fill(writer: BatchWriter, stats: WriterStats, *messages: AnyMessage) -> list[Received]:
    pending: list[Received] = []
    for m in messages:
        d = encode(m)
        writer.add(pending, stats, d.topic, d.payload)
    return pending


class Unavailable:
    """A store whose writes fail as if the database were down, the first `failures` times."""

    def __init__(self, store: Store, failures: int) -> None:
        self.store, self.failures = store, failures

    def apply(self, batch: Batch) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("connection refused")
        self.store.apply(batch)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def test_a_refused_message_is_dead_lettered_and_the_rest_of_its_batch_committed(store: Store) -> None:
    writer = BatchWriter(CollectorSettings(), store)
    stats = WriterStats()
    good = fill(writer, stats, agent(), *(status(f"cam-{i}", "online", i) for i in range(20)))
    poison = [
        received(forced(agent(minutes=1), cameras=2**64)),
        received(forced(clip("req-1", "succeeded", 1), size_bytes=2**70)),
    ]
    pending = good[:5] + poison[:1] + good[5:15] + poison[1:] + good[15:]
    assert writer.commit(pending, stats)
    assert stats.written == len(good)
    assert stats.dead_letters == Counter({"out_of_range": 2})
    assert len(store.cameras()) == 20 and store.clips() == []
    assert [(d.topic, d.payload, d.reason) for d in store.dead_letters()] == [
        (p.topic, p.payload, "out_of_range") for p in poison
    ]


def test_an_unavailable_store_is_retried_and_reported_never_dead_lettered(store: Store) -> None:
    reports: list[WriterStats] = []
    writer = BatchWriter(CollectorSettings(), Unavailable(store, failures=3), reports.append)  # type: ignore[arg-type]
    stats = WriterStats()
    pending = fill(writer, stats, agent(), meta("cam-1"), status("cam-1", "online", 1))
    assert writer.commit(pending, stats)
    assert [(r.store_errors, r.held) for r in reports] == [(1, 3)] * 3  # one report per failed attempt
    assert stats.written == 3 and not stats.dead_letters
    assert store.dead_letters() == [] and [c.state for c in store.cameras()] == ["online"]


def test_a_stop_request_ends_the_wait_for_an_unavailable_store(store: Store) -> None:
    stop = threading.Event()
    writer = BatchWriter(CollectorSettings(), Unavailable(store, failures=10**6), lambda _s: stop.set(), stop)  # type: ignore[arg-type]
    stats = WriterStats()
    assert not writer.commit(fill(writer, stats, agent(), meta("cam-1")), stats)
    assert stats.written == 0 and store.cameras() == [] and store.dead_letters() == []


def test_a_district_cannot_take_over_another_districts_camera(store: Store) -> None:
    writer = BatchWriter(CollectorSettings(), store)
    stats = WriterStats()
    mapo = {"district": "mapo", "agent_id": "agent-mapo"}
    pending = fill(
        writer, stats, agent(), meta("cam-1"), status("cam-1", "online", 1), agent("mapo", "agent-mapo")
    )
    pending += fill(
        writer,
        stats,
        meta("cam-1", **mapo),
        status("cam-1", "offline", 2, **mapo),
        clip("req-1", "accepted", 2).model_copy(update=mapo),
        health({"cam-1": "offline", "mapo-1": "online"}, 3, **mapo),
        agent("jongno", "agent-mapo"),  # mapo's agent id announcing itself for jongno
    )
    assert writer.commit(pending, stats)
    assert stats.rejected == Counter({"camera_of_other_district": 4, "agent_of_other_district": 1})
    cams = {c.camera_id: (c.district, c.state) for c in store.cameras()}
    assert cams == {"cam-1": ("gangnam", "online"), "mapo-1": ("mapo", "online")}
    assert store.health_counts("mapo") == {"online": 1}
    assert store.known_agents() == {"gangnam": "agent-gangnam", "mapo": "agent-mapo"}
    # After a restart the gate knows the index's cameras.
    again = BatchWriter(CollectorSettings(), store)
    later = WriterStats()
    fill(again, later, agent("mapo", "agent-mapo", minutes=5), status("cam-1", "offline", 6, **mapo))
    assert later.rejected == Counter({"camera_of_other_district": 1})


def test_another_districts_agent_is_refused_by_default(store: Store) -> None:
    assert CollectorSettings().ingest.require_known_agent
    writer = BatchWriter(CollectorSettings(), store)
    stats = WriterStats()
    # District mapo's agent publishing on gangnam's topics under its own id.
    fill(
        writer,
        stats,
        agent(),
        agent("mapo", "agent-mapo"),
        status("cam-9", "online", 1, agent_id="agent-mapo"),
    )
    assert stats.rejected == Counter({"unknown_agent": 1})
