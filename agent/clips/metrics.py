"""Prometheus metrics of evidence clips. The registry is injected; labels are bounded (never a request id)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ClipMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self.requests = Counter(
            "cctv_agent_clip_requests_total",
            "Clip requests by outcome (accepted, duplicate or the reason they were refused)",
            ["outcome"],
            registry=r,
        )
        self.commands_refused = Counter(
            "cctv_agent_commands_refused_total",
            "Clip and arm commands the district does not serve (agent/command_policy.py), by reason",
            ["reason"],
            registry=r,
        )
        self.captures = Counter(
            "cctv_agent_clip_captures_total", "Captures by result (complete, partial, failed)", ["result"],
            registry=r,
        )  # fmt: skip
        self.uploads = Counter(
            "cctv_agent_clip_uploads_total", "Clip uploads by result (succeeded, retry)", ["result"],
            registry=r,
        )  # fmt: skip
        self.uploads_blocked = Gauge(
            "cctv_agent_clip_uploads_blocked",
            "1 while S3 refuses uploads for a reason a person must fix, by reason (access_denied, "
            "invalid_access_key, signature_mismatch, no_such_bucket, clock_skew, no_credentials, "
            "client_error, rejected)",
            ["reason"],
            registry=r,
        )
        self.uploaded_bytes = Counter(
            "cctv_agent_clip_uploaded_bytes_total", "Clip bytes sent to S3 (parts)", registry=r
        )
        self.backlog_clips = Gauge(
            "cctv_agent_clip_upload_backlog_clips", "Clips captured or capturing, not yet in S3", registry=r
        )
        self.backlog_bytes = Gauge(
            "cctv_agent_clip_upload_backlog_bytes", "Spooled bytes of clips not yet in S3", registry=r
        )
        self.completion = Histogram(
            "cctv_agent_clip_window_end_to_object_seconds",
            "From the end of the requested window to the complete object in S3",
            buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 1800, 3600),
            registry=r,
        )
        self.spool_usage = Gauge("cctv_agent_spool_usage_bytes", "Bytes in the clip spool", registry=r)
        self.spool_full = Gauge(
            "cctv_agent_spool_full", "1 while the spool is over its limit (routine clips refused)", registry=r
        )
        self.outbox_pending = Gauge(
            "cctv_agent_clip_outbox_pending", "Clip results not yet acknowledged by the broker", registry=r
        )
        self.internal_errors = Counter(
            "cctv_agent_clip_internal_errors_total",
            "Unexpected errors the clip service survived, by where (command, capture, upload_retry)",
            ["where"],
            registry=r,
        )
