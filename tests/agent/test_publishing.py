"""The publishing policy (agent/publishing.py): what the agent sends, and when, without a broker."""

from __future__ import annotations

import dataclasses
import json

from agent.ledger import LedgerCamera
from agent.metrics import AgentMetrics
from agent.onvif_reader import CameraInfo, StreamInfo
from agent.publishing import Publishing
from agent.registry import Registry
from contract import topics
from contract.codec import Delivery


def fleet() -> tuple[Registry, AgentMetrics, list[tuple[str, Delivery]], Publishing]:
    cameras = [LedgerCamera(camera_id=f"gangnam-0000{n}", host=f"127.0.0.{n}") for n in (1, 2)]
    registry = Registry("gangnam", "agent-1", cameras)
    for record in registry.records.values():
        record.info = CameraInfo("Acme", "C1", "1.0", f"sn-{record.camera_id}", "hw", None, 0.0,
                                 [StreamInfo("main", "h264", 1920, 1080, 25.0, 4000)])  # fmt: skip
        record.observation.enumerated = True
    sent: list[tuple[str, Delivery]] = []
    metrics = AgentMetrics()
    publishing = Publishing(
        registry, metrics, publish=lambda d, kind: sent.append((kind, d)), clock_skew_limit_s=5.0
    )
    return registry, metrics, sent, publishing


def test_meta_and_status_are_published_on_change_only() -> None:
    registry, metrics, sent, publishing = fleet()
    publishing.changes(check_meta=True)
    assert sorted(kind for kind, _ in sent) == ["meta", "meta", "status", "status"]
    sent.clear()
    publishing.changes(check_meta=True)  # nothing changed
    assert sent == []
    record = registry.records["gangnam-00001"]
    assert record.info is not None
    record.info = dataclasses.replace(record.info, firmware="2.0")  # upgraded
    publishing.changes(check_meta=True)
    assert [(kind, d.topic) for kind, d in sent] == [("meta", topics.camera_meta("gangnam", "gangnam-00001"))]
    assert metrics.registry.get_sample_value("cctv_agent_cameras", {"state": "online"}) == 2


def test_retained_state_starts_with_the_online_presence_of_the_session() -> None:
    _, _, _, publishing = fleet()
    publishing.changes()
    deliveries = publishing.retained_state(session=42)
    presence = json.loads(deliveries[0].payload)
    assert (presence["state"], presence["session"]) == ("online", 42)
    assert len(deliveries) == 1 + 2 * 2  # every camera's meta and status


def test_a_camera_outside_the_contract_is_skipped_and_counted() -> None:
    registry, metrics, sent, publishing = fleet()
    registry.records["gangnam-00001"].ledger = LedgerCamera.model_construct(
        camera_id="gangnam-00001", host="127.0.0.1", name="x", address_text="", lat=float("nan"), lon=None
    )
    publishing.changes(check_meta=True)
    assert [d.topic for kind, d in sent if kind == "meta"] == [topics.camera_meta("gangnam", "gangnam-00002")]
    assert metrics.registry.get_sample_value("cctv_agent_errors_total", {"kind": "hostile"}) == 1
