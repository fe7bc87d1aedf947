"""uvicorn on the collector's own event loop: the API starts and stops with `cctv-collector run`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import anyio.to_thread
import uvicorn
from fastapi import FastAPI

GRACE_S = 10  # requests in flight at shutdown get this long to finish


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the collector owns SIGTERM and SIGINT: uvicorn must not replace their handlers


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int, threads: int) -> None:
        self._app, self._host, self._port, self._threads = app, host, port, threads
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Listen now (a port in use raises OSError here, at start), then serve on the running loop."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening
        # socket says it is TCP; without it a keep-alive response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(2048)
        config = uvicorn.Config(
            self._app,
            http="httptools",  # the C parser: h11 (pure Python) costs more CPU per request
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACE_S,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._serve(self._server, sock))

    async def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        # Sync handlers run in anyio's default thread pool (40 threads). Under load 40 threads only contend
        # for the GIL and the database's locks (each holding its lock longer); a few bound the queue's work.
        anyio.to_thread.current_default_thread_limiter().total_tokens = self._threads
        await server.serve(sockets=[sock])

    async def stop(self) -> None:
        """Stop accepting, let the requests in flight finish (up to GRACE_S), close."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
