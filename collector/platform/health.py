"""`GET /v1/healthz`: the collector's own health, open to probes (no token: it says nothing about cameras)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from collector.platform.context import Platform, platform
from collector.platform.routing import Route

router = APIRouter(tags=["health"], route_class=Route)


@router.get(
    "/healthz",
    summary="Ingest health: 200 when MQTT is subscribed, the writer alive and the store committing, else 503",
    responses={503: {"description": "unhealthy; the body says which part"}},
)
def healthz(p: Annotated[Platform, Depends(platform)]) -> JSONResponse:
    status: dict[str, Any] = p.health()
    return JSONResponse(status, status_code=200 if status.get("ok") else 503)
