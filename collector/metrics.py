"""Prometheus metrics of the collector, on a registry the caller injects (tests use a fresh one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MESSAGE_KINDS = ("agent_state", "camera_meta", "camera_status", "health", "clip", "live")


class CollectorMetrics:
    """Every metric the ingest path updates. Labels stay bounded: message kind and rejection reason only."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "collector_received_messages_total",
            "MQTT messages accepted for indexing, by kind",
            ["kind"],
            registry=r,
        )
        self.rejected = Counter(
            "collector_rejected_messages_total", "MQTT messages dropped, by reason", ["reason"], registry=r
        )
        self.written = Counter(
            "collector_written_messages_total", "Messages committed to the index", registry=r
        )
        self.queue_depth = Gauge(
            "collector_queue_depth", "Messages waiting between the MQTT thread and the writer", registry=r
        )
        self.batch_seconds = Histogram(
            "collector_batch_seconds",
            "Time to commit one batch",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.batch_messages = Histogram(
            "collector_batch_messages",
            "Messages per committed batch",
            registry=r,
            buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000),
        )
        self.store_errors = Counter(
            "collector_store_errors_total",
            "Failed attempts to commit because the store was unavailable (each retry counts)",
            registry=r,
        )
        self.dead_letters = Counter(
            "collector_dead_letters_total",
            "Messages the index refused, kept in its dead_letters table, by reason",
            ["reason"],
            registry=r,
        )
        self.last_commit = Gauge(
            "collector_last_commit_timestamp_seconds", "Unix time of the last committed batch", registry=r
        )
        self.connected = Gauge("collector_mqtt_connected", "1 while connected to the broker", registry=r)
        for kind in MESSAGE_KINDS:
            self.received.labels(kind=kind)
