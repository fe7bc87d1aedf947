"""The agent's Prometheus metrics. The registry is injected so tests use a fresh one.

Labels stay bounded: one `camera_up` series per camera of the district (a few thousand), never per request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cameras = Gauge("cctv_agent_cameras", "Cameras by state", ["state"], registry=r)
        self.camera_up = Gauge(
            "cctv_agent_camera_up", "1 if the camera answers, else 0", ["camera"], registry=r
        )
        self.clock_offset = Gauge(
            "cctv_agent_camera_clock_offset_seconds", "Camera clock minus agent clock", ["camera"], registry=r
        )
        self.sweep_duration = Histogram(
            "cctv_agent_sweep_duration_seconds",
            "Duration of a full ONVIF enumeration sweep",
            buckets=(1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.onvif_latency = Histogram(
            "cctv_agent_onvif_call_duration_seconds",
            "Latency of ONVIF calls to cameras",
            ["call"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "cctv_agent_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.published = Counter(
            "cctv_agent_mqtt_published_total", "Messages published", ["kind"], registry=r
        )
        self.dropped = Counter(
            "cctv_agent_mqtt_dropped_total", "Messages dropped before the broker", ["kind"], registry=r
        )
        self.errors = Counter("cctv_agent_errors_total", "Errors by kind", ["kind"], registry=r)
        self.commands_rejected = Counter(
            "cctv_agent_commands_rejected_total",
            "Commands dropped without an answer because they broke the contract, by reason",
            ["reason"],
            registry=r,
        )
