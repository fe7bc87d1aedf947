"""The collector's scrape-time gauges, read from a real index."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from collector.index.gauges import IndexGauges
from collector.index.store import Batch, Store, open_store
from tests.collector.conftest import agent, status


def _scrape(collector: IndexGauges) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_gauges_show_cameras_by_state_and_agents(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'index.db'}"
    store = open_store(url)
    store.migrate()
    batch = Batch()
    for m in (agent(), status("cam-1", "online", 1), status("cam-2", "offline", 1)):
        batch.add(m)
    store.apply(batch)
    store.close()
    text = _scrape(IndexGauges(lambda: open_store(url)))
    assert "cctv_collector_index_up 1.0" in text
    assert 'cctv_collector_cameras{district="gangnam",state="online"} 1.0' in text
    assert 'cctv_collector_cameras{district="gangnam",state="offline"} 1.0' in text
    assert 'cctv_collector_agent_online{district="gangnam"} 1.0' in text


def test_an_unreadable_index_is_reported_not_raised() -> None:
    def broken() -> Store:
        raise OSError("database is away")

    text = _scrape(IndexGauges(broken))
    assert "cctv_collector_index_up 0.0" in text
    assert "cctv_collector_cameras{" not in text
