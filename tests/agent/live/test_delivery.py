"""A live session's uploads through an uplink outage: in order, nothing re-dated, bounded, drops counted."""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry

from agent.clips.s3 import UploadError
from agent.live.delivery import Delivery, InitItem, LiveKeys, SegmentItem
from agent.live.metrics import LiveMetrics
from contract.messages import LiveSegmentInfo

T0 = 1_700_000_000.0


class FlakyBucket:
    """Takes PUTs while `up` is set; raises the uploader's transient error otherwise."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.up.set()
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, body: bytes, _content_type: str) -> None:
        if not self.up.is_set():
            raise UploadError(f"{key}: S3 unreachable (EndpointConnectionError)", transient=True)
        self.objects[key] = body


class Run:
    def __init__(self, queue_max_bytes: int = 1 << 20, drain_s: float = 5.0) -> None:
        self.bucket = FlakyBucket()
        self.announced: list[tuple[LiveSegmentInfo, bool]] = []  # and whether its object existed then
        self.ended = threading.Event()
        self.reason = ""
        self.registry = CollectorRegistry()
        self.delivery = Delivery(
            LiveKeys("gangnam", "live-1"), put=self.bucket.put, announce=self._announce, on_end=self._end,
            queue_max_bytes=queue_max_bytes, metrics=LiveMetrics(self.registry), drain_s=drain_s,
        )  # fmt: skip
        self.delivery.thread.start()

    def _announce(self, info: LiveSegmentInfo) -> None:
        self.announced.append((info, info.object_key in self.bucket.objects))

    def _end(self, reason: str) -> None:
        self.reason = reason
        self.ended.set()

    def segment(self, n: int, size: int = 100) -> SegmentItem:
        return SegmentItem(0, bytes([n]) * size, T0 + n, 1.0, discontinuity=False)

    def count(self, outcome: str) -> float:
        return self.registry.get_sample_value("cctv_agent_live_segments_total", {"outcome": outcome}) or 0.0


def wait_for(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_segments_wait_out_an_outage_in_order_with_their_capture_times() -> None:
    run = Run()
    run.delivery.add(InitItem(0, b"init"))
    run.delivery.add(run.segment(0))
    wait_for(lambda: len(run.announced) == 1)
    run.bucket.up.clear()  # the uplink goes down
    for n in range(1, 5):
        run.delivery.add(run.segment(n))
    time.sleep(0.3)
    assert len(run.announced) == 1  # nothing is announced that is not in the bucket
    run.bucket.up.set()
    run.delivery.finish("stopped_by_request")
    assert run.ended.wait(10) and run.reason == "stopped_by_request"
    infos = [info for info, _ in run.announced]
    assert [i.sequence for i in infos] == [0, 1, 2, 3, 4]
    assert all(existed for _, existed in run.announced)
    assert [i.started_at.timestamp() for i in infos] == [T0 + n for n in range(5)]  # late, and seen to be
    assert [run.bucket.objects[i.object_key][:1] for i in infos] == [bytes([n]) for n in range(5)]
    assert (
        infos[0].init_key == "live/gangnam/live-1/init-0.mp4"
        and "live/gangnam/live-1/init-0.mp4" in run.bucket.objects
    )
    assert infos[4].object_key == "live/gangnam/live-1/00000004.m4s"
    assert not any(i.discontinuity for i in infos)
    assert (run.count("uploaded"), run.count("failed")) == (5, 0)


def test_beyond_its_bound_the_oldest_waiting_segments_are_dropped_and_the_gap_is_marked() -> None:
    run = Run(queue_max_bytes=350)  # three segments of 100 bytes (and the init) wait; more are dropped
    run.bucket.up.clear()
    run.delivery.add(InitItem(0, b"init"))
    for n in range(7):
        run.delivery.add(run.segment(n))
    run.bucket.up.set()
    run.delivery.finish("expired")
    assert run.ended.wait(10) and run.reason == "expired"
    infos = [info for info, _ in run.announced]
    shown = [run.bucket.objects[i.object_key][0] for i in infos]
    assert [i.sequence for i in infos] == list(range(len(infos)))  # contiguous: the playlist stays valid
    assert shown[-3:] == [4, 5, 6] and len(shown) < 7  # the newest are kept
    assert run.count("failed") == 7 - len(shown) and run.count("uploaded") == len(shown)
    after_gap = [i.discontinuity for i in infos]
    assert after_gap == [shown[k] - (shown[k - 1] if k else -1) > 1 for k in range(len(shown))]


def test_at_the_end_an_unreachable_bucket_gets_its_grace_then_the_end_is_told() -> None:
    run = Run(drain_s=0.5)
    run.bucket.up.clear()
    run.delivery.add(InitItem(0, b"init"))
    run.delivery.add(run.segment(0))
    run.delivery.add(run.segment(1))
    began = time.monotonic()
    run.delivery.finish("shutdown")
    assert run.ended.wait(5) and run.reason == "shutdown"
    assert time.monotonic() - began < 2
    assert run.announced == [] and run.count("failed") == 2
