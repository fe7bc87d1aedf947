"""The PostgreSQL index store (psycopg 3): the shared SQL, with executemany pipelined by psycopg."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from collector.store_sql import SqlStore

MIGRATION_LOCK_ID = 0x43435456  # "CCTV"


class PostgresStore(SqlStore):
    engine = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    def _connect(self) -> Any:
        return psycopg.connect(self.url, connect_timeout=10)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        # A session-level advisory lock: every collector process migrating the same database waits here.
        self._conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        self._conn.commit()
        try:
            yield
        finally:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
            self._conn.commit()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")
