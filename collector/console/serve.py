"""Serve the console: `/` leads to `/console/`, where its static files and its `config.json` (the tile
layer) are, each response with a Content-Security-Policy that allows no inline script and no foreign origin
but the clip bucket (presigned playback URLs) and the configured tile server.

The console has a prefix of its own rather than a catch-all mount at `/`, so that every other path stays the
API's (its JSON 404 and 405); FastAPI's `/v1/docs` page, which needs inline script, keeps no such policy.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.config import ConsoleSettings

STATIC = Path(__file__).parent / "static"


PREFIX = "/console"


def mount_console(app: FastAPI, settings: ConsoleSettings, media_url: str | None) -> None:
    """Add the console to the API's app. `media_url`: the S3 endpoint the presigned clip URLs point at."""
    config = {"tile_url": settings.tile_url, "tile_attribution": settings.tile_attribution}

    async def console_config(_request: Request) -> JSONResponse:
        return JSONResponse(config)

    site = Starlette(
        routes=[
            Route("/config.json", console_config),
            Mount("/", StaticFiles(directory=STATIC, html=True)),
        ]
    )
    policy = content_security_policy(origin(media_url), origin(settings.tile_url))
    app.mount(PREFIX, SecurityHeaders(site, policy), name="console")

    async def home(_request: Request) -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    app.add_route("/", home, include_in_schema=False)


def origin(url: str | None) -> str | None:
    """`scheme://host[:port]` of a URL; None for none (a tile template's `{s}` subdomains are allowed)."""
    if not url:
        return None
    parts = urlsplit(url.replace("{s}.", "*."))
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(media: str | None, tiles: str | None) -> str:
    extra_media = f" {media}" if media else ""
    extra_img = "".join(f" {o}" for o in (media, tiles) if o)
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: blob:{extra_img}",
            f"media-src 'self' blob:{extra_media}",
            f"connect-src 'self'{extra_media}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


class SecurityHeaders:
    """ASGI wrapper adding the policy and the usual hardening headers to every response of `app`."""

    def __init__(self, app: ASGIApp, policy: str) -> None:
        self._app = app
        self._headers = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-cache"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self._headers]
            await send(message)

        await self._app(scope, receive, with_headers)
