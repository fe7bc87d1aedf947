"""One database transaction, as the platform's parts use it: incidents, clip requests, the command outbox and
the audit record of each action are written through the same `Tx`, so they commit together or not at all.

Statements use `?` placeholders on both engines (translated for PostgreSQL). `Store.transaction()` opens one:
on SQLite with BEGIN IMMEDIATE (the write lock is taken first, so two writers never deadlock on an upgrade and
the audit chain's head is read and extended by one writer at a time); on PostgreSQL callers that need that
order lock a row (`SELECT ... FOR UPDATE`).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any


class Tx:
    def __init__(self, cursor: Any, engine: str, sql: Callable[[str], str]) -> None:
        self._cur, self.engine, self._sql = cursor, engine, sql

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        self._cur.execute(self._sql(statement), params)
        return int(self._cur.rowcount)

    def executemany(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self._cur.executemany(self._sql(statement), rows)

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(self._sql(statement), params)
        rows: list[tuple[Any, ...]] = self._cur.fetchall()
        return rows

    def for_update(self) -> str:
        """Row-lock suffix for a SELECT that must serialise writers (SQLite: empty, it locks the file)."""
        return " FOR UPDATE" if self.engine == "postgres" else ""


def params(row: Any) -> tuple[Any, ...]:
    """A dataclass row's field values in field order, as a statement's parameters (`dataclasses.astuple`
    copies every value deeply: about 20 us a row, paid for every clip request and every ingested update)."""
    values = _VALUES.get(type(row))
    if values is None:
        get = operator.attrgetter(*(f.name for f in dataclasses.fields(row)))
        values = _VALUES[type(row)] = get if len(dataclasses.fields(row)) > 1 else lambda r: (get(r),)
    return values(row)


_VALUES: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
