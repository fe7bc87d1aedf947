"""The platform's public HTTP API (FastAPI): everything under /v1, OpenAPI 3.1 at /v1/openapi.json.

Routers are by resource; what they share (stores, access, audit, commands) is a `Platform` the composition
root builds (collector/app.py). Prometheus metrics are served on their own port, not here; every request is
counted and timed by its route template (observe.py).
"""

from __future__ import annotations

from fastapi import FastAPI

from collector.platform import audit, cameras, clips, districts, errors, health, incidents, live, me
from collector.platform.context import Platform
from collector.platform.observe import RequestMetrics

API_VERSION = "1.0.0"


def create_app(p: Platform) -> FastAPI:
    app = FastAPI(
        title="Seoul CCTV sharing platform",
        version=API_VERSION,
        summary="Incidents, nearest cameras across districts, clip requests, live view and audited playback",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    app.state.platform = p
    app.add_middleware(RequestMetrics, metrics=p.metrics)
    errors.install(app)
    routers = (health, me, cameras, districts, incidents, clips, live, audit)
    for module in routers:
        app.include_router(module.router, prefix="/v1")
    return app
