"""The collector's small HTTP API (aiohttp): `GET /cameras?district=&state=` and `GET /healthz`.

Prometheus metrics are served separately on the metrics port (see app.py). Later issues add agency access
rules in front of /cameras; keep handlers thin so that stays easy.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from collector.index.store import Store
from contract.messages import CameraState

T = TypeVar("T")
STATES: frozenset[str] = frozenset(CameraState.__args__)  # type: ignore[attr-defined]


class StoreThread:
    """One read-only store connection owned by one worker thread (SQLite connections stay in theirs)."""

    def __init__(self, factory: Callable[[], Store]) -> None:
        self._factory = factory
        self._store: Store | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-api-store")

    async def run(self, fn: Callable[[Store], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[Store], T]) -> T:
        if self._store is None:
            self._store = self._factory()
        return fn(self._store)

    def close(self) -> None:
        def _close() -> None:
            if self._store is not None:
                self._store.close()

        self._pool.submit(_close).result()
        self._pool.shutdown()


STORE_KEY = web.AppKey("store", StoreThread)
HEALTH_KEY: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("health")


async def cameras(request: web.Request) -> web.Response:
    district = request.query.get("district") or None
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        return web.json_response({"error": f"state must be one of {sorted(STATES)}"}, status=400)
    rows = await request.app[STORE_KEY].run(lambda s: s.cameras(district, state))
    return web.json_response({"cameras": [dataclasses.asdict(r) for r in rows], "count": len(rows)})


async def healthz(request: web.Request) -> web.Response:
    status = request.app[HEALTH_KEY]()
    return web.json_response(status, status=200 if status.get("ok") else 503)


def make_app(store: StoreThread, health: Callable[[], dict[str, Any]]) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store
    app[HEALTH_KEY] = health
    app.router.add_get("/cameras", cameras)
    app.router.add_get("/healthz", healthz)
    return app
