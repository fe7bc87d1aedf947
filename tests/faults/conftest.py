"""The fault suite: each test is a scenario against real services (Mosquitto, Ceph S3, PostgreSQL, camsim,
the real agent and collector) that asserts nothing was lost or corrupted. Every test here is marked `faults`
(and `integration`); docs/reliability.md lists each scenario, what is promised and the test that shows it."""

from __future__ import annotations

import pytest

# The simulated district, the agent's settings and the wait helpers are the integration suite's.
from tests.collector.conftest import pg_service, start_collector_process, wait_until  # noqa: F401
from tests.integration.conftest import district  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)
