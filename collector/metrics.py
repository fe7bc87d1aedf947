"""Prometheus metrics of the collector, on one registry the caller injects (tests use a fresh one).

`CollectorMetrics` is what the ingest path updates; `PlatformMetrics` (its `platform` part) is what the HTTP
API and the outcomes of clip requests update: the figures docs/monitoring.md builds the SLOs on. The command
outbox (collector/commands/outbox.py) and the audit checkpointer (collector/audit/checkpoints.py) register
their own on the same registry; the index gauges (collector/index/gauges.py) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contract.districts import DISTRICTS

MESSAGE_KINDS = ("agent_state", "camera_meta", "camera_status", "health", "clip", "live")
CLIP_OUTCOMES = ("requested", "succeeded", "failed", "refused")
WINDOW_OUTCOMES = ("delivered", "failed")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (a raw path would be unbounded)


class CollectorMetrics:
    """Every metric the ingest path updates. Labels stay bounded: message kind and rejection reason only."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "cctv_collector_received_messages_total",
            "MQTT messages accepted for indexing, by kind",
            ["kind"],
            registry=r,
        )
        self.rejected = Counter(
            "cctv_collector_rejected_messages_total",
            "MQTT messages dropped, by reason",
            ["reason"],
            registry=r,
        )
        self.written = Counter(
            "cctv_collector_written_messages_total", "Messages committed to the index", registry=r
        )
        self.queue_depth = Gauge(
            "cctv_collector_queue_depth",
            "Messages waiting between the MQTT thread and the writer",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "cctv_collector_batch_seconds",
            "Time to commit one batch",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.batch_messages = Histogram(
            "cctv_collector_batch_messages",
            "Messages per committed batch",
            registry=r,
            buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000),
        )
        self.store_errors = Counter(
            "cctv_collector_store_errors_total",
            "Failed attempts to commit because the store was unavailable (each retry counts)",
            registry=r,
        )
        self.dead_letters = Counter(
            "cctv_collector_dead_letters_total",
            "Messages the index refused, kept in its dead_letters table, by reason",
            ["reason"],
            registry=r,
        )
        self.last_commit = Gauge(
            "cctv_collector_last_commit_timestamp_seconds",
            "Unix time of the last committed batch",
            registry=r,
        )
        self.connected = Gauge("cctv_collector_mqtt_connected", "1 while connected to the broker", registry=r)
        for kind in MESSAGE_KINDS:
            self.received.labels(kind=kind)
        self.platform = PlatformMetrics(r)


class PlatformMetrics:
    """The platform's service levels. Labels stay bounded: a route template (never the raw path), a method
    from a fixed set, a status code, an agency of the policy, a district."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.api_requests = Counter(
            "cctv_collector_api_requests_total",
            "HTTP API requests by route template, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        self.api_seconds = Histogram(
            "cctv_collector_api_request_seconds",
            "HTTP API request duration by route template, from the request to the end of the response",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.clip_requests = Counter(
            "cctv_collector_clip_requests_total",
            "Clip requests by agency and outcome: requested, refused (403), then succeeded or failed as the "
            "district answered",
            ["agency", "outcome"],
            registry=r,
        )
        self.first_clip = Histogram(
            "cctv_collector_incident_first_clip_seconds",
            "Golden time: from an incident's opening to its first clip stored and playable",
            registry=r,
            buckets=(1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600),
        )
        self.evidence_windows = Counter(
            "cctv_collector_evidence_windows_total",
            "Requested clip windows by district and final outcome (delivered or failed): the evidence SLO",
            ["district", "outcome"],
            registry=r,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Every district's series exists from the start, so that the first outcome shows as an increase.
        for district in DISTRICTS:
            for outcome in WINDOW_OUTCOMES:
                self.evidence_windows.labels(district=district, outcome=outcome)

    def expect_agencies(self, agencies: Iterable[str]) -> None:
        """Create the agencies' clip request series at zero: their first request then shows as an increase."""
        for agency in agencies:
            for outcome in CLIP_OUTCOMES:
                self.clip_requests.labels(agency=agency, outcome=outcome)

    def clip_finished(self, agency: str, district: str, outcome: str, first_clip_s: float | None) -> None:
        """A requested window reached its final outcome (succeeded or failed), maybe its incident's first."""
        self.clip_requests.labels(agency=agency, outcome=outcome).inc()
        delivered = "delivered" if outcome == "succeeded" else "failed"
        self.evidence_windows.labels(district=district, outcome=delivered).inc()
        if first_clip_s is not None:
            self.first_clip.observe(first_clip_s)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One API request. The label children are cached: a request costs two dictionary lookups and two
        locked additions."""
        key = (route, method if method in METHODS else "other", status)
        children = self._children.get(key)
        if children is None:
            verb = key[1]
            children = (
                self.api_requests.labels(route=route, method=verb, status=str(status)),
                self.api_seconds.labels(route=route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
