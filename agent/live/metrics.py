"""Prometheus metrics of live views (design.md section 3). The registry is injected; labels are bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class LiveMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.sessions = Gauge("cctv_agent_live_sessions", "Live sessions running", registry=r)
        self.segments = Counter(
            "cctv_agent_live_segments_total",
            "Live segments by outcome: uploaded, or failed (dropped while S3 was behind, or at the end)",
            ["outcome"],
            registry=r,
        )
        self.upload_seconds = Histogram(
            "cctv_agent_live_segment_upload_seconds",
            "From the start of a live segment's upload to its object in S3 (retries included)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.requests = Counter(
            "cctv_agent_live_requests_total",
            "Live commands by outcome: started, renewed, stopped, or the reason they were refused",
            ["outcome"],
            registry=r,
        )
        self.ended = Counter(
            "cctv_agent_live_sessions_ended_total",
            "Live sessions ended by reason: stopped_by_request, expired, camera_lost, no_keyframe, shutdown",
            ["reason"],
            registry=r,
        )
