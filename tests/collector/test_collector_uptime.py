"""Availability from a known status history."""

from __future__ import annotations

import pytest

from collector.index import uptime
from collector.index.store import Batch, Store, Transition
from tests.collector.conftest import at, status


def test_parse_duration() -> None:
    assert uptime.parse_duration("7d") == 7 * 86400
    assert uptime.parse_duration("90m") == 5400
    with pytest.raises(ValueError, match="duration"):
        uptime.parse_duration("7 days")


def test_camera_availability_counts_online_and_degraded_and_skips_unobserved_time() -> None:
    since, until = at(0).timestamp(), at(100).timestamp()
    history = [
        Transition("cam-1", "gangnam", "online", at(-30).timestamp()),  # state at the window's start
        Transition("cam-1", "gangnam", "offline", at(20).timestamp()),
        Transition("cam-1", "gangnam", "degraded", at(50).timestamp()),
        Transition("cam-1", "gangnam", "unknown", at(80).timestamp()),
    ]
    row = uptime.camera_availability("cam-1", "gangnam", history, since, until)
    assert row.observed_s == 80 * 60  # the last 20 minutes are "unknown"
    assert row.available_s == (20 + 30) * 60
    assert row.availability == pytest.approx(50 / 80)
    assert row.coverage == pytest.approx(0.8)


def test_report_from_the_store_per_camera_and_district(store: Store) -> None:
    batch = Batch()
    for m in [
        status("cam-1", "online", -10),
        status("cam-1", "offline", 30),  # 30 of 60 min available
        status("cam-2", "online", 30),
    ]:  # 30 of 30 observed minutes
        batch.add(m)
    store.apply(batch)
    cameras, total = uptime.report(store, "gangnam", at(0).timestamp(), at(60).timestamp())
    by_id = {c.camera_id: c for c in cameras}
    assert by_id["cam-1"].availability == pytest.approx(0.5)
    assert by_id["cam-2"].availability == pytest.approx(1.0)
    assert by_id["cam-2"].coverage == pytest.approx(0.5)
    assert total.availability == pytest.approx((30 + 30) / (60 + 30))
    assert "gangnam (all)" in uptime.format_table(cameras, total)
