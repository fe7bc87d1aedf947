"""One store connection per worker thread of the API.

FastAPI runs sync endpoints in a thread pool; a SQLite connection must stay in the thread that opened it and a
PostgreSQL connection must not carry two transactions at once, so each worker thread opens its own, lazily.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from collector.index.store import Store


class ThreadStores:
    def __init__(self, factory: Callable[[], Store]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._opened: list[Store] = []
        self._lock = threading.Lock()

    def get(self) -> Store:
        """This thread's store, opened on first use."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self._factory()
            self._local.store = store
            with self._lock:
                self._opened.append(store)
        return store

    def close(self) -> None:
        """Close every connection at shutdown (a SQLite connection refuses another thread: it is then left to
        the process exit, which closes it)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for store in opened:
            with contextlib.suppress(Exception):
                store.close()
