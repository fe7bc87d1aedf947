"""Agent presence in the index: ordered by connection session, and what a dark district's cameras show."""

from __future__ import annotations

from itertools import permutations
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from collector.index import uptime
from collector.index.gauges import IndexGauges
from collector.index.store import Batch, Store, open_store
from contract.messages import AnyMessage
from tests.collector.conftest import agent, at, status

# The will is fixed when its connection begins, so it is *older* by sent_at than the online sent after it.
ONLINE_1 = agent(minutes=1, session=100)
WILL_1 = agent(minutes=0, session=100, state="offline")
ONLINE_2 = agent(minutes=5, session=200)
GOODBYE_2 = agent(minutes=9, session=200, state="offline")


def write(store: Store, *messages: AnyMessage, minutes: float | None = None) -> None:
    batch = Batch(received_at=None if minutes is None else at(minutes).timestamp())
    for m in messages:
        batch.add(m)
    store.apply(batch)


def test_a_last_will_wins_over_the_online_of_its_own_connection(store: Store) -> None:
    write(store, ONLINE_1)
    write(store, WILL_1)
    assert store.agent_states() == {"gangnam": "offline"}


@pytest.mark.parametrize(
    ("messages", "final"),
    [
        ((ONLINE_1, WILL_1), "offline"),
        ((ONLINE_1, WILL_1, ONLINE_2), "online"),
        ((ONLINE_1, WILL_1, ONLINE_2, GOODBYE_2), "offline"),
    ],
    ids=["will", "reconnected", "goodbye"],
)
def test_presence_ends_the_same_in_any_arrival_order(
    store: Store, messages: tuple[AnyMessage, ...], final: str
) -> None:
    """QoS 1 redelivery, retained replays and a late will can bring presence in any order: the last
    connection's word stands, never an older connection's online. Each order plays in a district of its own,
    once message by message and once as one batch."""
    expected = {}
    for i, order in enumerate(permutations(messages)):
        for district, batches in ((f"order-{i}", [[m] for m in order]), (f"batch-{i}", [list(order)])):
            for batch in batches:
                write(store, *(m.model_copy(update={"district": district}) for m in batch))
            expected[district] = final
    assert store.agent_states() == expected


def test_cameras_of_a_dark_district_show_unknown_until_its_agent_is_back(store: Store) -> None:
    write(store, ONLINE_1, agent("jongno", "agent-jongno", session=100))
    write(store, status("cam-1", "online", 1), status("cam-2", "offline", 1, ["unreachable"]))
    write(store, status("cam-9", "online", 1, district="jongno", agent_id="agent-jongno"))
    write(store, WILL_1)
    views = {c.camera_id: c for c in store.cameras(district="gangnam")}
    assert {c: (v.state, v.reasons, v.agent_online) for c, v in views.items()} == {
        "cam-1": ("unknown", ["agent_offline"], False),
        "cam-2": ("unknown", ["agent_offline"], False),
    }
    assert views["cam-1"].last_seen == at(1).timestamp()  # when it was last reported, still shown
    assert [c.camera_id for c in store.cameras(state="unknown")] == ["cam-1", "cam-2"]
    assert [c.camera_id for c in store.cameras(state="online")] == ["cam-9"]  # another district is not dark
    assert store.camera_counts() == {("gangnam", "unknown"): 2, ("jongno", "online"): 1}
    write(store, ONLINE_2)
    assert {c.camera_id: (c.state, c.agent_online) for c in store.cameras(district="gangnam")} == {
        "cam-1": ("online", True),
        "cam-2": ("offline", True),
    }


def test_a_camera_without_an_announced_agent_shows_its_report(store: Store) -> None:
    write(store, status("cam-1", "online", 1))
    [cam] = store.cameras()
    assert (cam.state, cam.agent_online) == ("online", None)


def test_gauges_count_a_dark_districts_cameras_as_unknown(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'index.db'}"
    store = open_store(url)
    store.migrate()
    write(store, ONLINE_1, status("cam-1", "online", 1), status("cam-2", "degraded", 1))
    write(store, WILL_1)
    store.close()
    registry = CollectorRegistry()
    registry.register(IndexGauges(lambda: open_store(url)))
    assert registry.get_sample_value("cctv_collector_agent_online", {"district": "gangnam"}) == 0
    assert (
        registry.get_sample_value("cctv_collector_cameras", {"district": "gangnam", "state": "unknown"}) == 2
    )
    assert 'state="online"' not in generate_latest(registry).decode()


def test_uptime_counts_the_time_an_agent_was_offline_as_unobserved(store: Store) -> None:
    write(store, ONLINE_1, minutes=-20)
    write(store, status("cam-1", "online", -10))
    write(store, WILL_1, minutes=20)  # dark from minute 20 ...
    write(store, WILL_1, minutes=25)  # (a duplicate delivery changes nothing)
    write(store, ONLINE_2, minutes=40)  # ... to minute 40, then the last report holds again
    [cam], total = uptime.report(store, "gangnam", at(0).timestamp(), at(60).timestamp())
    assert cam.observed_s == 40 * 60
    assert cam.available_s == 40 * 60
    assert cam.coverage == pytest.approx(40 / 60)
    assert total.availability == pytest.approx(1.0)


def test_as_seen_lays_presence_over_a_cameras_history() -> None:
    history = [
        uptime.Transition("cam-1", "gangnam", "online", 0.0),
        uptime.Transition("cam-1", "gangnam", "offline", 50.0),  # reported while the agent was dark
    ]
    presence = [(-5.0, "online"), (30.0, "offline"), (40.0, "offline"), (70.0, "online")]
    seen = uptime.as_seen(history, presence)
    assert [(t.state, t.at) for t in seen] == [("online", 0.0), ("unknown", 30.0), ("offline", 70.0)]
