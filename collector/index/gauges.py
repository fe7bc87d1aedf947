"""Gauges read from the index at scrape time: how many of each district's cameras are in each state, and
whether each district's agent is online. They are what uptime dashboards and alerts are built on.

Each scrape opens its own store (prometheus_client serves scrapes from its own threads, and a SQLite
connection belongs to the thread that opened it): two small GROUP BY queries, about 20 ms for a city.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from collector.index.store import Store

log = logging.getLogger(__name__)


class IndexGauges(Collector):
    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open_store = open_store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        readable = GaugeMetricFamily(
            "cctv_collector_index_up", "1 when the index could be read for this scrape"
        )
        try:
            store = self._open_store()
            try:
                counts, agents = store.camera_counts(), store.agent_states()
            finally:
                store.close()
        except Exception as exc:  # a scrape must not fail because the database is away for a moment
            log.warning("index gauges unavailable: %s", exc)
            readable.add_metric([], 0)
            yield readable
            return
        readable.add_metric([], 1)
        yield readable
        cameras = GaugeMetricFamily(
            "cctv_collector_cameras",
            "Cameras in the index by district and current state (unknown while their agent is offline)",
            labels=["district", "state"],
        )
        for (district, state), n in sorted(counts.items()):
            cameras.add_metric([district, state], n)
        yield cameras
        online = GaugeMetricFamily(
            "cctv_collector_agent_online",
            "1 when the district's agent is online, 0 after its goodbye or its last will",
            labels=["district"],
        )
        for district, state in sorted(agents.items()):
            online.add_metric([district], 1 if state == "online" else 0)
        yield online
