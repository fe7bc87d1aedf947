"""The console as the collector serves it: `/` leads to it, every asset comes from the collector itself with
a Content-Security-Policy that allows no inline script and no foreign origin but the clip bucket and the
configured tile server, the API keeps its own errors, and the JavaScript stays within its weight budget."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from collector.config import ConsoleSettings
from collector.console.serve import STATIC, mount_console
from collector.index.store import Store
from collector.platform.api import create_app
from collector.platform.context import Platform
from collector.platform.stores import ThreadStores

S3 = "http://127.0.0.1:7480"
TILES = "https://tiles.example.go.kr/{z}/{x}/{y}.png"
JS_BUDGET_BYTES = 1_000_000


def _no_store() -> Store:
    raise AssertionError("these requests need no store")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Platform(stores=ThreadStores(_no_store), health=lambda: {"ok": True}))
    mount_console(app, ConsoleSettings(tile_url=TILES, tile_attribution="© tiles"), S3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test") as c:
        yield c


async def test_the_root_leads_to_the_console_served_with_its_policy(client: httpx.AsyncClient) -> None:
    root = await client.get("/")
    assert (root.status_code, root.headers["location"]) == (307, "/console/")
    page = await client.get("/console/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["media-src"] == f"'self' blob: {S3}" and policy["connect-src"] == f"'self' {S3}"
    assert policy["img-src"] == f"'self' data: blob: {S3} https://tiles.example.go.kr"
    assert policy["frame-ancestors"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    config = await client.get("/console/config.json")
    assert config.json() == {"tile_url": TILES, "tile_attribution": "© tiles"}
    assert "content-security-policy" in config.headers


async def test_every_asset_the_page_names_is_served_from_the_collector(client: httpx.AsyncClient) -> None:
    page = (await client.get("/console/")).text
    found = _References()
    found.feed(page)
    assert found.inline_scripts == 0 and found.inline_styles == 0
    assert not any(re.match(r"^(https?:)?//", ref) for ref in found.refs), found.refs
    for ref in [*found.refs, *_module_imports()]:
        r = await client.get(f"/console/{ref}")
        assert r.status_code == 200, ref


async def test_the_api_keeps_its_own_answers_beside_the_console(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert (await client.post("/v1/healthz")).json()["error"]["code"] == "method_not_allowed"
    assert "content-security-policy" not in (await client.get("/v1/healthz")).headers
    assert (await client.get("/console/nothing-here.js")).status_code == 404


def test_the_consoles_javascript_weighs_under_1_mb_as_shipped() -> None:
    shipped = sum(p.stat().st_size for p in STATIC.rglob("*") if p.suffix in (".js", ".mjs"))
    print(f"\nconsole JavaScript as shipped: {shipped:,} bytes")
    assert shipped < JS_BUDGET_BYTES


def test_each_vendored_library_ships_its_licence_and_is_recorded() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text(encoding="utf-8")
    folders = [p for p in (STATIC / "vendor").iterdir() if p.is_dir()]
    assert {p.name for p in folders} == {"leaflet-1.9.4", "hls.js-1.7.4"}
    for folder in folders:
        assert (folder / "LICENSE").stat().st_size > 0 and f"`{folder.name}/`" in readme
    attribution = (STATIC / "data" / "README.md").read_text(encoding="utf-8")
    assert "District boundaries: JUSO 2015 via southkorea/seoul-maps (Apache-2.0)" in attribution


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = self.inline_styles = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        ref = a.get("src") or (a.get("href") if tag == "link" else None)
        if ref:
            self.refs.append(ref)
        self.inline_scripts += tag == "script" and not a.get("src")
        self.inline_styles += tag == "style" or "style" in a


def _module_imports() -> list[str]:
    """What the modules import, relative to the console's folder."""
    refs = []
    for module in (STATIC / "js").glob("*.js"):
        for target in re.findall(r'from "(\.[^"]+)"', module.read_text(encoding="utf-8")):
            refs.append(str((Path("js") / target).as_posix()).replace("js/../", ""))
    return refs
