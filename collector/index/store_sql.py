"""The SQL both engines share, written once in the subset SQLite and PostgreSQL both speak.

Statements use `?` placeholders; the PostgreSQL store rewrites them to `%s` (no statement contains a literal
`?` or `%`). Engine specifics (connecting, pragmas, bulk paths) live in store_sqlite / store_postgres.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from importlib import resources
from typing import Any

from collector.index.store import (
    CLIP_STATUS_RANK,
    AgentRow,
    Batch,
    CameraView,
    ClipRow,
    DeadLetter,
    StatusRow,
    StoreError,
    StoreRejectedError,
    StoreUnavailableError,
    Transition,
)
from collector.index.tx import Tx, params

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# Presence is ordered by the agent's connection session: a later session wins, and within one session
# `offline` (its last will or its goodbye) wins over `online`, so an old session's `online` never overrides.
# The row comes back only when it was written: that is when the presence history gets a row.
UPSERT_AGENT = """
INSERT INTO agents (district, agent_id, state, version, cameras, sent_at, session)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (district) DO UPDATE SET agent_id = excluded.agent_id, state = excluded.state,
  version = excluded.version, cameras = excluded.cameras, sent_at = excluded.sent_at,
  session = excluded.session
WHERE excluded.session > agents.session OR (excluded.session = agents.session AND excluded.state = 'offline')
RETURNING state
"""
INSERT_PRESENCE = """
INSERT INTO agent_history (district, state, at) VALUES (?, ?, ?)
ON CONFLICT (district, at) DO UPDATE SET state = excluded.state
"""

# A camera as users see it: while its district's agent is offline, nobody vouches for its last report.
CAMERA_VIEW = """
SELECT c.camera_id, c.district, c.agent_id, COALESCE(c.name, '') AS name,
  CASE WHEN a.state = 'offline' THEN 'unknown' ELSE COALESCE(c.state, 'unknown') END AS state,
  CASE WHEN a.state = 'offline' THEN 'agent_offline' ELSE c.reasons END AS reasons,
  COALESCE(c.manufacturer, '') AS manufacturer, COALESCE(c.model, '') AS model, c.last_seen,
  a.state AS agent_state, c.place_district, c.lat, c.lon, c.meta_updated_at
FROM cameras c LEFT JOIN agents a ON a.district = c.district
"""

# What `camera_view` reads, in its order.
CAMERA_COLUMNS = (
    "camera_id, district, agent_id, name, state, reasons, manufacturer, model, last_seen, agent_state, "
    "lat, lon, place_district"
)

UPSERT_META = """
INSERT INTO cameras (camera_id, district, agent_id, name, address_text, lat, lon, manufacturer, model,
  firmware, serial, identity, identity_kind, meta_updated_at, place_district)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (camera_id) DO UPDATE SET agent_id = excluded.agent_id, name = excluded.name,
  address_text = excluded.address_text, lat = excluded.lat, lon = excluded.lon,
  manufacturer = excluded.manufacturer, model = excluded.model, firmware = excluded.firmware,
  serial = excluded.serial, identity = excluded.identity, identity_kind = excluded.identity_kind,
  meta_updated_at = excluded.meta_updated_at, place_district = excluded.place_district
WHERE cameras.district = excluded.district
  AND (cameras.meta_updated_at IS NULL OR excluded.meta_updated_at >= cameras.meta_updated_at)
"""

# A camera never changes district: no statement below moves one, even when the writer's gate let it through.
HISTORY_ON_CONFLICT = (
    "ON CONFLICT (camera_id, at) DO UPDATE SET state = excluded.state, reasons = excluded.reasons "
    "WHERE status_history.district = excluded.district"
)

# A history row only when state or reasons change, never from a report older than the current one, and never
# for a camera of another district.
INSERT_TRANSITION = f"""
INSERT INTO status_history (camera_id, district, state, reasons, at)
SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION)
WHERE NOT EXISTS (SELECT 1 FROM cameras c WHERE c.camera_id = ?
  AND ((c.state = ? AND c.reasons = ?) OR c.checked_at > ? OR c.district <> ?))
{HISTORY_ON_CONFLICT}
"""  # noqa: S608 - constants only

INSERT_LATER_TRANSITION = f"""
INSERT INTO status_history (camera_id, district, state, reasons, at)
SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION)
WHERE NOT EXISTS (SELECT 1 FROM cameras c WHERE c.camera_id = ? AND (c.checked_at > ? OR c.district <> ?))
{HISTORY_ON_CONFLICT}
"""  # noqa: S608 - constants only

STATUS_COLUMNS = "camera_id, district, agent_id, state, reasons, last_error, since, checked_at, last_seen"
# The same camera state never resets `since`; an older report changes nothing.
STATUS_ON_CONFLICT = """
ON CONFLICT (camera_id) DO UPDATE SET agent_id = excluded.agent_id,
  since = CASE WHEN cameras.state = excluded.state AND cameras.since IS NOT NULL
               THEN cameras.since ELSE excluded.since END,
  state = excluded.state, reasons = excluded.reasons,
  last_error = COALESCE(excluded.last_error, cameras.last_error),
  checked_at = excluded.checked_at, last_seen = excluded.last_seen
WHERE cameras.district = excluded.district
  AND (cameras.checked_at IS NULL OR excluded.checked_at >= cameras.checked_at)
"""
UPSERT_STATUS = f"""
INSERT INTO cameras ({STATUS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
{STATUS_ON_CONFLICT}
"""  # noqa: S608 - constants only

UPSERT_HEALTH_COUNT = """
INSERT INTO health_counts (district, taken_at, state, cameras) VALUES (?, ?, ?, ?)
ON CONFLICT (district, taken_at, state) DO UPDATE SET cameras = excluded.cameras
"""

_CLIP_COLUMNS = (
    "request_id, camera_id, district, agent_id, status, reason, object_key, thumbnail_key, manifest_key, "
    "size_bytes, sha256, covered_start, covered_end, agency, incident, updated_at, missing_object, source, "
    "footage"
)
_CLIP_KEEP = (
    "object_key",
    "thumbnail_key",
    "manifest_key",
    "size_bytes",
    "sha256",
    "covered_start",
    "covered_end",
    "agency",
    "incident",
    "footage",
)
# Progress never regresses: a lower rank, or an older update of the same rank, changes nothing. The reason
# is the latest update's (it explains the current status); keys and digests, once known, are kept.
# `succeeded` outranks `failed` (a late `failed` leaves a delivered clip as it is); a QoS 1 duplicate rewrites
# the same values.
UPSERT_CLIP = f"""
INSERT INTO clips ({_CLIP_COLUMNS}, status_rank) VALUES ({", ".join(["?"] * 20)})
ON CONFLICT (request_id) DO UPDATE SET status = excluded.status, status_rank = excluded.status_rank,
  agent_id = COALESCE(excluded.agent_id, clips.agent_id), reason = excluded.reason,
  {", ".join(f"{c} = COALESCE(excluded.{c}, clips.{c})" for c in _CLIP_KEEP)},
  updated_at = excluded.updated_at, missing_object = excluded.missing_object, source = excluded.source
WHERE clips.district = excluded.district AND (excluded.status_rank > clips.status_rank
   OR (excluded.status_rank = clips.status_rank AND excluded.updated_at >= clips.updated_at))
"""  # noqa: S608 - column names are constants, values are parameters

# The first answer of an agent to a clip command stops its republication (collector/commands/outbox.py);
# only the command's own district answers it. An answer after expiry replaces `expired`: the agent did answer.
MARK_ANSWERED = """
UPDATE command_outbox SET answered_at = ?, answer_status = ?
WHERE request_id = ? AND district = ? AND (answered_at IS NULL OR answer_status = 'expired')
"""


class SqlStore(ABC):
    """Store implementation over a DB-API connection; subclasses connect and pick the migrations folder."""

    engine: str  # name of the folder under collector/index/migrations
    # The driver's exception base classes (plus what binding a value can raise): errors of the database.
    driver_errors: tuple[type[Exception], ...] = (OverflowError, UnicodeError)

    def __init__(self) -> None:
        self._conn: Any = self._connect()

    @abstractmethod
    def _connect(self) -> Any: ...

    def _sql(self, statement: str) -> str:
        return statement

    def _executemany(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            cur = self._conn.cursor()
            cur.executemany(self._sql(statement), rows)

    def _query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._read(statement, params)
        except Exception:
            lost = self._connection_lost()
            self._recover()
            if not lost:
                raise
        return self._read(statement, params)  # once more, on the new connection

    def _read(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cur = self._conn.cursor()
        cur.execute(self._sql(statement), params)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        self._conn.commit()  # end the read transaction: PostgreSQL would hold a snapshot otherwise
        return rows

    # -- migrations ---------------------------------------------------------------------------------------
    def _run_script(self, script: str) -> None:
        self._conn.cursor().execute(script)

    def schema_version(self) -> int:
        self._run_script(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        self._conn.commit()
        rows = self._query("SELECT MAX(version) FROM schema_version")
        return int(rows[0][0] or 0)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """Held while migrating, so that two processes starting at once do not both apply a migration."""
        yield

    def migrate(self) -> list[int]:
        with self._migration_lock():
            return self._migrate()

    def _migrate(self) -> list[int]:
        current = self.schema_version()
        applied = []
        for version, script in _migrations(self.engine):
            if version <= current:
                continue
            try:
                self._run_script(script)
                self._conn.cursor().execute(
                    self._sql("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"),
                    (version, time.time()),
                )
                self._conn.commit()
            except Exception:
                self._conn.rollback()
                raise
            log.info("applied migration %s of %s", version, self.engine)
            applied.append(version)
        return applied

    # -- writes -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One transaction for the platform's writes: committed when the block ends, rolled back if it raises.
        A database error is raised as StoreError (classified like ingest's); the caller's own errors (a
        refusal, a bad request) pass through unchanged."""
        try:
            cur = self._conn.cursor()
            self._begin(cur)
            yield Tx(cur, self.engine, self._sql)
            self._conn.commit()
        except Exception as exc:
            self._recover()
            raise self._from_driver(exc) from exc

    @contextlib.contextmanager
    def reading(self) -> Iterator[Tx]:
        """Reads for the API, without a write lock; the read transaction ends with the block (errors as in
        `transaction`)."""
        try:
            yield Tx(self._conn.cursor(), self.engine, self._sql)
            self._conn.commit()
        except Exception as exc:
            self._recover()
            raise self._from_driver(exc) from exc

    def _begin(self, cur: Any) -> None:  # noqa: B027 - deliberately empty: drivers begin implicitly
        """Start a write transaction (SQLite overrides this to take its write lock first)."""

    def apply(self, batch: Batch) -> None:
        """Write a batch in one transaction. On failure nothing of it is kept and a StoreError says whether a
        retry can succeed; a lost connection is replaced first, so that it can."""
        try:
            self._write(batch)
            self._conn.commit()
        except Exception as exc:
            self._recover()
            raise self._classify(exc) from exc

    def _from_driver(self, exc: Exception) -> Exception:
        """A database error as StoreError; anything else (the caller's own) unchanged."""
        return self._classify(exc) if isinstance(exc, self.driver_errors) else exc

    def _classify(self, exc: Exception) -> StoreError:
        """The one place a driver's exception becomes StoreRejectedError (a value the database cannot hold) or
        StoreUnavailableError (anything else: a good message must never be dead-lettered for an outage)."""
        reason = self._rejection_reason(exc)
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if reason is None:
            return StoreUnavailableError(detail)
        return StoreRejectedError(reason, detail)

    def _rejection_reason(self, exc: Exception) -> str | None:
        """The slug of a data error of this engine, None for a transient one."""
        if isinstance(exc, OverflowError):  # a Python int the driver cannot bind
            return "out_of_range"
        if isinstance(exc, UnicodeError):  # text the driver cannot encode
            return "invalid_text"
        return None

    def dead_letter(self, letters: list[DeadLetter], keep: int) -> None:
        try:
            self._executemany(
                "INSERT INTO dead_letters (topic, payload, reason, error, at) VALUES (?, ?, ?, ?, ?)",
                [(_clean(d.topic), d.payload, d.reason, _clean(d.error), d.at) for d in letters],
            )
            self._conn.cursor().execute(
                self._sql("DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?"),
                (keep,),
            )
            self._conn.commit()
        except Exception as exc:
            self._recover()
            raise self._classify(exc) from exc

    def _connection_lost(self) -> bool:
        return False  # an embedded database has no connection to lose

    def _recover(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.rollback()
        if not self._connection_lost():
            return
        log.warning("lost the %s connection; reconnecting", self.engine)
        try:
            self._conn = self._connect()
        except Exception as exc:  # still down: the next attempt tries again
            log.warning("reconnecting to %s failed: %s", self.engine, exc)

    def _write(self, batch: Batch) -> None:
        self._write_presence(batch.agents)
        self._executemany(UPSERT_META, [params(m) for m in batch.metas])
        self._write_statuses(batch)
        self._executemany(UPSERT_HEALTH_COUNT, [params(h) for h in batch.health_counts])
        self._write_clips(batch.clips)

    def _write_presence(self, rows: list[AgentRow]) -> None:
        # Row by row (presence is rare): each one meets the one before it.
        cur = self._conn.cursor()
        for a in rows:
            params = (a.district, a.agent_id, a.state, a.version, a.cameras, a.sent_at, a.session)
            cur.execute(self._sql(UPSERT_AGENT), params)
            if cur.fetchone() is not None:
                cur.execute(self._sql(INSERT_PRESENCE), (a.district, a.state, a.received_at))

    def _write_statuses(self, batch: Batch) -> None:
        # Both history statements run before the upsert, against the state before this batch: the first report
        # of a camera is compared with the index, later ones in the batch with the report before them.
        first, later = _transitions(batch.statuses)
        self._executemany(
            INSERT_TRANSITION,
            [
                (
                    s.camera_id,
                    s.district,
                    s.state,
                    s.reasons,
                    s.since,
                    s.camera_id,
                    s.state,
                    s.reasons,
                    s.checked_at,
                    s.district,
                )
                for s in first
            ],
        )
        self._executemany(
            INSERT_LATER_TRANSITION,
            [
                (s.camera_id, s.district, s.state, s.reasons, s.since, s.camera_id, s.checked_at, s.district)
                for s in later
            ],
        )
        self._executemany(
            UPSERT_STATUS,
            [
                (
                    s.camera_id,
                    s.district,
                    s.agent_id,
                    s.state,
                    s.reasons,
                    s.last_error,
                    s.since,
                    s.checked_at,
                    s.checked_at,
                )
                for s in batch.statuses
            ],
        )

    def _write_clips(self, clips: list[ClipRow]) -> None:
        for request_id in self._late_failures(clips):
            log.warning("clip %s: `failed` after `succeeded` ignored", request_id,
                        extra={"request_id": request_id, "reason": "failed_after_succeeded"})  # fmt: skip
        self._executemany(UPSERT_CLIP, [_clip_params(c) for c in clips])
        now = time.time()
        self._executemany(MARK_ANSWERED, [(now, c.status, c.request_id, c.district) for c in clips])

    def _late_failures(self, clips: list[ClipRow]) -> list[str]:
        """Request ids of `failed` updates for clips that already succeeded (in the index or this batch)."""
        failed = [c.request_id for c in clips if c.status == "failed"]
        if not failed:
            return []
        marks = ", ".join("?" * len(failed))
        cur = self._conn.cursor()
        cur.execute(
            self._sql(f"SELECT request_id FROM clips WHERE status = 'succeeded' AND request_id IN ({marks})"),  # noqa: S608
            failed,
        )
        succeeded = {r[0] for r in cur.fetchall()}
        late = []
        for c in clips:
            if c.status == "succeeded":
                succeeded.add(c.request_id)
            elif c.status == "failed" and c.request_id in succeeded:
                late.append(c.request_id)
        return late

    def upsert_clips(self, rows: list[ClipRow]) -> None:
        self.apply(Batch(clips=rows))

    def set_missing(self, request_ids: list[str], missing: bool) -> None:
        self._executemany(
            "UPDATE clips SET missing_object = ? WHERE request_id = ?", [(missing, r) for r in request_ids]
        )
        self._conn.commit()

    def replace_clips(self, rows: list[ClipRow]) -> int:
        """Swap the whole clip index for `rows` in one transaction; the number of rows it replaced."""
        try:
            cur = self._conn.cursor()
            cur.execute("DELETE FROM clips")
            replaced = int(cur.rowcount)
            self._executemany(UPSERT_CLIP, [_clip_params(c) for c in rows])
            self._conn.commit()
        except Exception:
            self._recover()  # rolled back: the old index stays
            raise
        return replaced

    # -- reads --------------------------------------------------------------------------------------------
    def known_agents(self) -> dict[str, str]:
        return {d: a for d, a in self._query("SELECT district, agent_id FROM agents")}

    def camera_districts(self) -> dict[str, str]:
        return {c: d for c, d in self._query("SELECT camera_id, district FROM cameras")}

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._query("SELECT topic, payload, reason, error, at FROM dead_letters ORDER BY id")
        return [DeadLetter(t, bytes(p), r, e, float(a)) for t, p, r, e, a in rows]

    def camera_counts(self) -> dict[tuple[str, str], int]:
        view = f"SELECT district, state, COUNT(*) FROM ({CAMERA_VIEW}) v GROUP BY district, state"  # noqa: S608
        rows = self._query(view)
        return {(d, s): int(n) for d, s, n in rows}

    def agent_states(self) -> dict[str, str]:
        return {d: s for d, s in self._query("SELECT district, state FROM agents")}

    def cameras(self, district: str | None = None, state: str | None = None) -> list[CameraView]:
        where, params = _filters({"district": district, "state": state})
        # The filter's column names are constants; values are parameters.
        rows = self._query(
            f"SELECT {CAMERA_COLUMNS} FROM ({CAMERA_VIEW}) v{where} ORDER BY district, camera_id",  # noqa: S608
            params,
        )
        return [camera_view(r) for r in rows]

    def history(
        self, district: str, since: float, until: float, camera_id: str | None = None
    ) -> list[Transition]:
        cam = " AND camera_id = ?" if camera_id else ""
        extra: tuple[Any, ...] = (camera_id,) if camera_id else ()
        # The optional camera filter is a constant; values are parameters.
        rows = self._query(
            "SELECT h.camera_id, h.district, h.state, h.at FROM status_history h "  # noqa: S608
            f"WHERE h.district = ? AND h.at > ? AND h.at <= ?{cam} "
            "UNION ALL "
            "SELECT h.camera_id, h.district, h.state, h.at FROM status_history h "
            "JOIN (SELECT camera_id, MAX(at) AS at FROM status_history "
            f"      WHERE district = ? AND at <= ?{cam} GROUP BY camera_id) p "
            "  ON p.camera_id = h.camera_id AND p.at = h.at "
            "ORDER BY 1, 4",
            (district, since, until, *extra, district, since, *extra),
        )
        return [Transition(r[0], r[1], r[2], float(r[3])) for r in rows]

    def presence(self, district: str, since: float, until: float) -> list[tuple[float, str]]:
        rows = self._query(
            "SELECT at, state FROM agent_history WHERE district = ? AND at > ? AND at <= ? "
            "UNION ALL SELECT at, state FROM agent_history WHERE district = ? AND at = "
            "(SELECT MAX(at) FROM agent_history WHERE district = ? AND at <= ?) ORDER BY 1",
            (district, since, until, district, district, since),
        )
        return [(float(at), state) for at, state in rows]

    def health_counts(self, district: str) -> dict[str, int]:
        rows = self._query(
            "SELECT state, cameras FROM health_counts WHERE district = ? AND taken_at = "
            "(SELECT MAX(taken_at) FROM health_counts WHERE district = ?)",
            (district, district),
        )
        return {r[0]: int(r[1]) for r in rows}

    def clips(self) -> list[ClipRow]:
        rows = self._query(f"SELECT {_CLIP_COLUMNS} FROM clips ORDER BY request_id")  # noqa: S608
        return [_clip_from_row(r) for r in rows]

    def close(self) -> None:
        self._conn.close()


def _transitions(statuses: list[StatusRow]) -> tuple[list[StatusRow], list[StatusRow]]:
    """Each camera's first report in the batch, and its later reports that change state or reasons."""
    first: list[StatusRow] = []
    later: list[StatusRow] = []
    previous: dict[str, StatusRow] = {}
    for row in statuses:
        prev = previous.get(row.camera_id)
        if prev is None:
            first.append(row)
        elif row.checked_at < prev.checked_at:
            continue  # older than what this batch already holds
        elif (row.state, row.reasons) != (prev.state, prev.reasons):
            later.append(row)
        previous[row.camera_id] = row
    return first, later


def _clean(text: str) -> str:
    """Text any engine can store: no NUL, no lone surrogate."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def camera_view(r: tuple[Any, ...]) -> CameraView:
    """The `CameraView` of a row of `CAMERA_COLUMNS` selected from `CAMERA_VIEW`."""
    reasons = [x for x in r[5].split(",") if x] if r[5] else []
    agent_online = None if r[9] is None else r[9] == "online"
    return CameraView(
        r[0], r[1], r[2], r[3], r[4], reasons, r[6], r[7], _float(r[8]), agent_online, _float(r[10]),
        _float(r[11]), r[12],
    )  # fmt: skip


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _clip_from_row(row: tuple[Any, ...]) -> ClipRow:
    values = list(row)
    values[16] = bool(values[16])  # SQLite returns 0/1
    return ClipRow(*values)


def _clip_params(c: ClipRow) -> tuple[Any, ...]:
    return (*params(c), CLIP_STATUS_RANK.get(c.status, 0))


def _filters(values: dict[str, str | None]) -> tuple[str, tuple[Any, ...]]:
    used = {k: v for k, v in values.items() if v is not None}
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), tuple(used.values())


def _migrations(engine: str) -> list[tuple[int, str]]:
    """(version, script) of collector/index/migrations/<engine>/NNNN_name.sql, in version order."""
    folder = resources.files("collector.index").joinpath("migrations", engine)
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)
