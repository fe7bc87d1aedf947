"""The district's third-party provision ledger: every clip the agent handed over, to whom and why.

Korean privacy law asks whoever provides personal data to a third party to keep a record of it. A clip is
handed over when its `succeeded` result (object keys, sha256) is published: one row then, with who asked
(agency, requested_by), for what (service, incident, purpose), which camera and window, and which object.
SQLite in the agent's state directory (next to the clip outbox), fsynced; the request id is the key, so a
result delivered again after a crash is recorded once. `cctv-agent ledger export` writes it as CSV.
"""

from __future__ import annotations

import contextlib
import csv
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from contract.messages import ClipRequest

COLUMNS = (
    "handed_over_at",
    "district",
    "agency",
    "requested_by",
    "service",
    "incident",
    "purpose",
    "camera_id",
    "window_start",
    "window_end",
    "covered_start",
    "covered_end",
    "object_key",
    "sha256",
    "size_bytes",
    "request_id",
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS provisions (
    request_id TEXT PRIMARY KEY, {", ".join(f"{c} TEXT" for c in COLUMNS if c != "request_id")}
);
CREATE INDEX IF NOT EXISTS provisions_by_time ON provisions (handed_over_at);
"""
# Built from the constant column names above, never from input.
INSERT = (
    f"INSERT OR IGNORE INTO provisions ({', '.join(COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join('?' * len(COLUMNS))})"
)
SELECT = (
    f"SELECT {', '.join(COLUMNS)} FROM provisions"  # noqa: S608
    " WHERE handed_over_at >= ? AND handed_over_at < ? ORDER BY handed_over_at, request_id"
)


def ledger_path(state_dir: Path) -> Path:
    """Where the ledger lives: the clip spool directory, next to the outbox."""
    return state_dir / "provisions.sqlite3"


class ProvisionLedger:
    """Used from the event loop only (one connection)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;" + SCHEMA)

    def record(
        self,
        request: ClipRequest,
        *,
        object_key: str | None,
        sha256: str | None,
        size_bytes: int,
        covered: tuple[datetime | None, datetime | None],
        at: datetime | None = None,
    ) -> None:
        row = {
            "handed_over_at": _iso(at or datetime.now(UTC)),
            "district": request.district,
            "agency": request.agency,
            "requested_by": request.requested_by,
            "service": request.service or "",
            "incident": request.incident,
            "purpose": request.purpose,
            "camera_id": request.camera_id,
            "window_start": _iso(request.start),
            "window_end": _iso(request.end),
            "covered_start": _iso(covered[0]),
            "covered_end": _iso(covered[1]),
            "object_key": object_key or "",
            "sha256": sha256 or "",
            "size_bytes": str(size_bytes),
            "request_id": request.request_id,
        }
        self._db.execute(INSERT, [row[c] for c in COLUMNS])

    def close(self) -> None:
        self._db.close()


def read_rows(
    path: Path, since: datetime | None = None, until: datetime | None = None
) -> list[tuple[str, ...]]:
    """The rows handed over in [since, until), oldest first. FileNotFoundError if the ledger does not exist;
    sqlite3.Error if it is unreadable."""
    if not path.is_file():
        raise FileNotFoundError(path)
    low = _iso(since) if since else ""
    high = _iso(until) if until else "~"  # sorts after every timestamp
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(SELECT, (low, high)).fetchall()


def write_csv(rows: Iterable[Sequence[str]], out: TextIO) -> None:
    """The rows as CSV with a header line."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    writer.writerows(rows)


def _iso(moment: datetime | None) -> str:
    """UTC, fixed width to the microsecond, so that text order is time order."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
