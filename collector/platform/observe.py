"""ASGI middleware that counts and times every API request by its route template (`/v1/clips/{clip_id}`,
never the raw path, which would make one series per clip). It runs outside the routers, so a request that
fails with an unhandled error is counted as 500, and one that no route matched as route `unmatched`."""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.metrics import UNMATCHED, PlatformMetrics


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: PlatformMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            elapsed = time.perf_counter() - began
            self.metrics.observe_request(route_template(scope), scope["method"], status, elapsed)


def route_template(scope: Scope) -> str:
    """The matched route's full template, bounded whatever the path. FastAPI writes the matched API route
    into this same scope; such a route of an included router knows its path without the include's prefix
    (`/clips/{clip_id}` under `/v1`), and that prefix is the request path's leading segments, which a match
    makes literal. The app's own routes (the OpenAPI document, the docs) leave only their endpoint: they have
    no parameters, so their path is their template; a mounted app (static files) counts as one series."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and not isinstance(route, Mount):  # a Mount's path does not cover the request's
        segments = scope["path"].split("/")
        return "/".join(segments[: max(1, len(segments) - path.count("/"))]) + path
    if "endpoint" not in scope:
        return UNMATCHED
    if "app_root_path" in scope or scope.get("path_params"):  # a Mount sets app_root_path
        return f"{scope.get('root_path', '')}/{{path}}"
    return str(scope["path"])
