"""The API server runs sync handlers in a bounded pool: `[http] api_threads` at once, the rest wait."""

from __future__ import annotations

import asyncio
import http.client
import threading

from fastapi import FastAPI

from collector.platform.server import ApiServer
from tests.services import free_port

THREADS = 2
REQUESTS = 6


def test_api_threads_bounds_the_handlers_running_at_once() -> None:
    app = FastAPI()
    lock = threading.Lock()
    running, most = 0, 0
    release = threading.Event()
    arrived = threading.Semaphore(0)

    @app.get("/work")
    def work() -> dict[str, int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        arrived.release()
        release.wait(10)
        with lock:
            running -= 1
        return {"ok": 1}

    port = free_port()
    answers: list[int] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/work")
        answers.append(conn.getresponse().status)
        conn.close()

    async def main() -> None:
        server = ApiServer(app, "127.0.0.1", port, THREADS)
        server.start()
        clients = [threading.Thread(target=client) for _ in range(REQUESTS)]
        for t in clients:
            t.start()
        # The pool's worth of handlers start; wait for them, then give the others a chance to (wrongly) start.
        for _ in range(THREADS):
            assert await asyncio.to_thread(arrived.acquire, True, 10)
        assert not await asyncio.to_thread(arrived.acquire, True, 0.5)
        release.set()
        for t in clients:
            await asyncio.to_thread(t.join, 20)
        await server.stop()

    asyncio.run(main())
    assert answers == [200] * REQUESTS
    assert most == THREADS
