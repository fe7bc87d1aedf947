"""The routes of the API: a sync endpoint takes one hop to a worker thread per request, not two.

FastAPI runs a sync endpoint in a worker thread and then validates its return value in a second hop to a
worker. Under load each hop is a queue put, a thread wake-up and a turn at the GIL for every request. `Route`
wraps a sync endpoint in a coroutine that runs it in the worker pool and gives its result back to FastAPI on
the event loop, where checking a model the endpoint built itself is an isinstance test. Dependencies that do
no blocking work are `async def` for the same reason (a sync dependency is one more hop).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool


class Route(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _in_worker(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _in_worker(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    # functools.wraps keeps the signature (FastAPI reads parameters and return model through __wrapped__).
    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return run
