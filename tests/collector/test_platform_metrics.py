"""The platform's service-level metrics as an operator reads them on /metrics: API requests by route template
(never the raw path), clip requests by agency and outcome, and, from the index as the district's answers are
committed, the evidence windows delivered or failed per district and the golden time of each incident."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.staticfiles import StaticFiles

from collector.config import CollectorSettings
from collector.index.store import open_store
from collector.ingest.outcomes import ClipOutcome
from collector.ingest.writer import BatchWriter, Received, WriterStats
from collector.platform.api import create_app
from collector.platform.context import Platform
from collector.platform.stores import ThreadStores
from contract.codec import encode
from contract.messages import ClipUpdate
from tests.collector.platform_harness import Harness, harness
from tests.collector.test_platform_clips import ask
from tests.collector.test_platform_incidents import open_incident


@pytest.fixture
async def h(tmp_path: Path, store_url: str) -> AsyncIterator[Harness]:
    async with harness(tmp_path, store_url) as built:
        yield built


def sample(h: Harness, name: str, **labels: str) -> float:
    return h.platform.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_api_requests_are_counted_and_timed_by_route_template(h: Harness) -> None:
    for clip_id in ("clip-a", "clip-b"):
        r = await h.client.get(f"/v1/clips/{clip_id}", headers=h.auth())
        assert r.status_code == 404
    assert (await h.client.get("/v1/no/such/path/42")).status_code == 404
    assert (await h.client.get("/v1/healthz")).status_code == 503  # the harness has no ingest to be healthy

    route = "/v1/clips/{clip_id}"
    assert sample(h, "cctv_collector_api_requests_total", route=route, method="GET", status="404") == 2
    assert sample(h, "cctv_collector_api_request_seconds_count", route=route) == 2
    assert sample(h, "cctv_collector_api_requests_total", route="unmatched", method="GET", status="404") == 1
    health = {"route": "/v1/healthz", "method": "GET", "status": "503"}
    assert sample(h, "cctv_collector_api_requests_total", **health) == 1
    assert (await h.client.get("/v1/openapi.json")).status_code == 200
    assert (
        sample(h, "cctv_collector_api_requests_total", route="/v1/openapi.json", method="GET", status="200")
        == 1
    )
    exposed = {s.labels.get("route") for m in h.platform.metrics.registry.collect() for s in m.samples}
    assert not [r for r in exposed if r and ("clip-a" in r or "42" in r)]  # no raw path ever becomes a label


async def test_a_mounted_app_counts_as_one_route(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>console</title>")
    (tmp_path / "app.js").write_text("export {};")
    p = Platform(ThreadStores(lambda: open_store(f"sqlite://{tmp_path / 'index.db'}")), dict)
    app = create_app(p)
    app.mount("/", StaticFiles(directory=tmp_path, html=True))  # as the console is served
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for path in ("/", "/app.js", "/index.html"):
            assert (await client.get(path)).status_code == 200

    static = {"route": "/{path}", "method": "GET", "status": "200"}
    assert p.metrics.registry.get_sample_value("cctv_collector_api_requests_total", static) == 3


async def test_clip_requests_are_counted_by_agency_requested_and_refused(h: Harness) -> None:
    inc = (await open_incident(h))["incident"]
    assert (await ask(h, inc["incident_id"], nearest=2)).status_code == 202
    refused = await ask(h, inc["incident_id"], camera_ids=["gn-office", "mp-office"])
    assert refused.status_code == 403
    other = await h.client.post(  # the 119 centre asks for clips under the 112 centre's incident
        f"/v1/incidents/{inc['incident_id']}/clips",
        json={"camera_ids": ["gn-office"], "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:10Z"},
        headers=h.auth("fire-119", "operator", "firefighter-lee"),
    )
    assert other.status_code == 403

    assert sample(h, "cctv_collector_clip_requests_total", agency="police-112", outcome="requested") == 2
    assert sample(h, "cctv_collector_clip_requests_total", agency="police-112", outcome="refused") == 1
    assert sample(h, "cctv_collector_clip_requests_total", agency="fire-119", outcome="refused") == 1


async def test_committed_answers_count_each_window_once_and_the_first_clip_of_an_incident(h: Harness) -> None:
    opened = time.time()
    inc = (await open_incident(h))["incident"]
    clips = (await ask(h, inc["incident_id"], nearest=2)).json()["clips"]
    first, second = clips
    writer = BatchWriter(CollectorSettings(), h.store)

    done = commit(writer, answer(first, "succeeded"), answer(first, "succeeded"))  # a QoS 1 duplicate
    [outcome] = done
    assert (outcome.agency, outcome.district, outcome.outcome) == ("police-112", "gangnam", "succeeded")
    assert outcome.first_clip_s is not None and 0 <= outcome.first_clip_s <= time.time() - opened + 1
    assert commit(writer, answer(first, "succeeded")) == []  # delivered again: nothing new
    assert commit(writer, answer(first, "failed")) == []  # a late failure never replaces a delivered clip
    assert commit(writer, answer(second, "uploading")) == []  # not final
    assert commit(writer, answer(second, "failed")) == [ClipOutcome("police-112", "gangnam", "failed")]
    # Delivered after all: counted as delivered too, but it is not the incident's first clip.
    assert commit(writer, answer(second, "succeeded")) == [ClipOutcome("police-112", "gangnam", "succeeded")]


def answer(clip: dict[str, Any], status: str) -> ClipUpdate:
    extra: dict[str, Any] = {}
    if status == "succeeded":
        extra = {"object_key": f"gangnam/{clip['clip_id']}.mp4", "size_bytes": 100, "sha256": "0" * 64}
    if status == "failed":
        extra = {"reason": "camera_unreachable"}
    return ClipUpdate(
        district="gangnam",
        request_id=clip["clip_id"],
        camera_id=clip["camera_id"],
        agent_id="agent-gangnam",
        status=status,
        sent_at=datetime.now(UTC),
        **extra,
    )


def commit(writer: BatchWriter, *updates: ClipUpdate) -> list[ClipOutcome]:
    stats = WriterStats()
    pending = []
    for update in updates:
        delivery = encode(update)
        pending.append(Received(delivery.topic, delivery.payload, update))
    assert writer.commit(pending, stats)
    return stats.clip_outcomes
