"""The SQLite index store: one file, WAL journal, synchronous=NORMAL, one transaction per writer batch.

WAL lets the API and CLI read while the writer commits; synchronous=NORMAL in WAL mode keeps every committed
batch across a process crash (a power loss may drop the last batches, which agents re-publish as retained).
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collector.index.store_sql import SqlStore


def sqlite_path(url: str) -> str:
    """The path after `sqlite://`: `sqlite:///var/lib/x.db` -> `/var/lib/x.db`, `sqlite://x.db` -> `x.db`."""
    if not url.startswith("sqlite://") or url == "sqlite://":
        raise ValueError("a SQLite URL looks like sqlite:///absolute/path/index.db")
    path = url[len("sqlite://") :]
    return ":memory:" if path in (":memory:", "/:memory:") else path


class SqliteStore(SqlStore):
    engine = "sqlite"
    driver_errors = (sqlite3.Error, OverflowError, UnicodeError)

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        super().__init__()

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _begin(self, cur: Any) -> None:
        if self._conn.in_transaction:
            self._conn.commit()  # a read left open must not turn the write lock into an upgrade
        cur.execute("BEGIN IMMEDIATE")

    def _rejection_reason(self, exc: Exception) -> str | None:
        # OperationalError (locked, disk I/O) is transient; these are about the values of the batch.
        if isinstance(exc, sqlite3.IntegrityError):
            return "constraint"
        if isinstance(exc, sqlite3.DataError):
            return "invalid_value"
        return super()._rejection_reason(exc)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        # executescript() commits any open transaction, so a SQL lock cannot span a migration: lock a file.
        if self.path == ":memory:":
            yield
            return
        with open(self.path + ".migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _run_script(self, script: str) -> None:
        # executescript commits first and manages no transaction: open one so the migration and its
        # schema_version row commit together.
        self._conn.executescript("BEGIN;\n" + script)
