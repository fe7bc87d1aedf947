"""The live view's metrics (names in design section 3), on the collector's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram

# Listing latency is one GOP (a segment is announced once complete) plus upload, announcement and listing.
_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 30.0)


class LiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions = Gauge(
            "cctv_collector_live_sessions",
            "Live sessions not stopped, by agency",
            ["agency"],
            registry=registry,
        )
        self.first_segment = Histogram(
            "cctv_collector_live_first_segment_seconds",
            "From a live session's start to its first segment listed",
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.listing = Histogram(
            "cctv_collector_live_segment_listing_seconds",
            "From the capture of a segment's first frame to the segment listed in its playlist",
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self._agencies: set[str] = set()

    def set_sessions(self, counts: dict[str, int]) -> None:
        """Sessions by agency now; an agency that had some and has none now reads 0."""
        self._agencies |= counts.keys()
        for agency in self._agencies:
            self.sessions.labels(agency=agency).set(counts.get(agency, 0))
