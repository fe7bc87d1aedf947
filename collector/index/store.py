"""The index store: what the writer, the API and the reports need from a database, and the rows they exchange.

Two engines implement `Store`: SQLite (default, `sqlite:///path`) and PostgreSQL (`postgresql://...`).
Times are epoch seconds (float) in both engines, so every query is the same arithmetic.

Lifecycle: a Store belongs to the thread that opened it (SQLite connections are not shared between threads);
the writer, the API and the CLI each open their own. `apply` writes one batch in one transaction.

Errors: a failed write raises `StoreUnavailableError` (the database is down, unreachable or locked: retry the
same batch) or `StoreRejectedError` (the database refused a value: the same batch can never succeed). Each
engine converts its driver's exceptions into these two, in one place (`SqlStore._classify`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from collector.index.geo import district_at
from contract.messages import (
    AgentState,
    AnyMessage,
    CameraMeta,
    CameraStatus,
    ClipUpdate,
    HealthSnapshot,
)

if TYPE_CHECKING:
    from collector.index.tx import Tx

# Clip progress only moves forward: a late "uploading" never replaces a final state. Both final states are
# final, and the clip that exists wins: "succeeded" (a clip is in the bucket) is never replaced by a late
# "failed"; a "failed" followed by "succeeded" (delivered after all) becomes "succeeded".
CLIP_STATUS_RANK: dict[str, int] = {
    "accepted": 0,
    "capturing": 1,
    "uploading": 2,
    "failed": 3,
    "succeeded": 4,
}
AVAILABLE_STATES: frozenset[str] = frozenset({"online", "degraded"})


class StoreError(Exception):
    """A write the index did not take (nothing of the batch is kept)."""


class StoreUnavailableError(StoreError):
    """Transient: retrying the same batch later can succeed."""


class StoreRejectedError(StoreError):
    """The database refused a value of the batch; `reason` is a slug for metrics (out_of_range, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def epoch(ts: datetime | None) -> float | None:
    return None if ts is None else ts.timestamp()


@dataclass(frozen=True, slots=True)
class AgentRow:
    """A district agent's presence; `received_at` is the collector's clock when it took the message in."""

    district: str
    agent_id: str
    state: str
    version: str
    cameras: int
    sent_at: float
    session: int
    received_at: float


@dataclass(frozen=True, slots=True)
class CameraMetaRow:
    camera_id: str
    district: str
    agent_id: str
    name: str
    address_text: str
    lat: float | None
    lon: float | None
    manufacturer: str
    model: str
    firmware: str
    serial: str
    identity: str
    identity_kind: str
    updated_at: float
    place_district: str | None  # from the district boundaries (geo.district_at), None without a position


@dataclass(frozen=True, slots=True)
class StatusRow:
    """A camera's state at `checked_at`; `since` is when that state began (the history row's time)."""

    camera_id: str
    district: str
    agent_id: str
    state: str
    reasons: str  # comma-joined; reasons are slugs without commas
    last_error: str | None
    since: float
    checked_at: float


@dataclass(frozen=True, slots=True)
class HealthCountRow:
    district: str
    taken_at: float
    state: str
    cameras: int


@dataclass(frozen=True, slots=True)
class ClipRow:
    request_id: str
    camera_id: str
    district: str
    agent_id: str | None
    status: str
    reason: str | None = None
    object_key: str | None = None
    thumbnail_key: str | None = None
    manifest_key: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    covered_start: float | None = None
    covered_end: float | None = None
    agency: str | None = None
    incident: str | None = None
    updated_at: float = 0.0
    missing_object: bool = False
    source: str = "mqtt"  # or "manifest" when reconciliation indexed it from the bucket
    footage: str | None = None  # where the agent took it from: live, preroll, recording (ClipUpdate.source)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the index refused, kept as received for a person to look at (`at`: epoch seconds)."""

    topic: str
    payload: bytes
    reason: str
    error: str
    at: float


@dataclass(frozen=True, slots=True)
class CameraView:
    """A camera as the API and `cameras` command show it. While its district's agent is offline, its state is
    `unknown` with the reason `agent_offline` (nobody vouches for the last report); `agent_online` is None
    when no agent has announced itself for the district. `place_district` is the district its position lies
    in by the boundaries (None without a position, as `lat` and `lon`)."""

    camera_id: str
    district: str
    agent_id: str
    name: str
    state: str
    reasons: list[str]
    manufacturer: str
    model: str
    last_seen: float | None
    agent_online: bool | None
    lat: float | None
    lon: float | None
    place_district: str | None


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of status history: from `at` on, the camera was in `state`."""

    camera_id: str
    district: str
    state: str
    at: float


@dataclass
class Batch:
    """Rows of one writer transaction, in arrival order within each kind. `received_at` times the presence
    changes (the collector's clock; None: the time each is added)."""

    received_at: float | None = None
    agents: list[AgentRow] = field(default_factory=list)
    metas: list[CameraMetaRow] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    health_counts: list[HealthCountRow] = field(default_factory=list)
    clips: list[ClipRow] = field(default_factory=list)
    messages: int = 0

    def add(self, message: AnyMessage) -> None:
        """Turn one decoded message into rows (commands are not telemetry and are ignored)."""
        self.messages += 1
        match message:
            case AgentState():
                now = time.time() if self.received_at is None else self.received_at
                self.agents.append(_agent_row(message, now))
            case CameraMeta():
                self.metas.append(_meta_row(message))
            case CameraStatus():
                self.statuses.append(_status_row(message))
            case HealthSnapshot():
                self._add_health(message)
            case ClipUpdate():
                self.clips.append(_clip_row(message))
            case _:
                self.messages -= 1

    def _add_health(self, snap: HealthSnapshot) -> None:
        taken = snap.taken_at.timestamp()
        counts: dict[str, int] = {}
        for entry in snap.cameras:
            checked = taken if entry.checked_at is None else entry.checked_at.timestamp()
            reasons = ",".join(entry.reasons)
            self.statuses.append(
                StatusRow(
                    entry.camera_id,
                    snap.district,
                    snap.agent_id,
                    entry.state,
                    reasons,
                    None,
                    checked,
                    checked,
                )
            )
            counts[entry.state] = counts.get(entry.state, 0) + 1
        self.health_counts.extend(
            HealthCountRow(snap.district, taken, s, n) for s, n in sorted(counts.items())
        )

    def __len__(self) -> int:
        return self.messages


def _agent_row(m: AgentState, received_at: float) -> AgentRow:
    return AgentRow(
        m.district, m.agent_id, m.state, m.version, m.cameras, m.sent_at.timestamp(), m.session, received_at
    )


def _meta_row(m: CameraMeta) -> CameraMetaRow:
    return CameraMetaRow(
        m.camera_id,
        m.district,
        m.agent_id,
        m.name,
        m.address_text,
        m.lat,
        m.lon,
        m.manufacturer,
        m.model,
        m.firmware,
        m.serial,
        m.identity,
        m.identity_kind,
        m.updated_at.timestamp(),
        None if m.lat is None or m.lon is None else district_at(m.lat, m.lon),
    )


def _status_row(m: CameraStatus) -> StatusRow:
    return StatusRow(
        m.camera_id,
        m.district,
        m.agent_id,
        m.state,
        ",".join(m.reasons),
        m.last_error,
        m.since.timestamp(),
        m.checked_at.timestamp(),
    )


def _clip_row(m: ClipUpdate) -> ClipRow:
    return ClipRow(
        request_id=m.request_id,
        camera_id=m.camera_id,
        district=m.district,
        agent_id=m.agent_id,
        status=m.status,
        reason=m.reason,
        object_key=m.object_key,
        thumbnail_key=m.thumbnail_key,
        manifest_key=m.manifest_key,
        size_bytes=m.size_bytes,
        sha256=m.sha256,
        covered_start=epoch(m.covered_start),
        covered_end=epoch(m.covered_end),
        updated_at=m.sent_at.timestamp(),
        footage=m.source,
    )


class Store(Protocol):
    """The index. Implementations: store_sqlite.SqliteStore, store_postgres.PostgresStore."""

    def migrate(self) -> list[int]:
        """Apply pending migrations in order; the versions applied (empty when up to date)."""
        ...

    def schema_version(self) -> int: ...

    def apply(self, batch: Batch) -> None:
        """Write a batch in one transaction; idempotent (a duplicate delivery changes nothing)."""
        ...

    def known_agents(self) -> dict[str, str]:
        """District -> the agent id last seen presenting itself for that district."""
        ...

    def camera_districts(self) -> dict[str, str]:
        """Camera id -> the district it belongs to (a camera never changes district)."""
        ...

    def dead_letter(self, letters: list[DeadLetter], keep: int) -> None:
        """Record refused messages in their own transaction, keeping only the newest `keep`."""
        ...

    def dead_letters(self) -> list[DeadLetter]:
        """The recorded dead letters, oldest first."""
        ...

    def cameras(self, district: str | None = None, state: str | None = None) -> list[CameraView]: ...

    def history(
        self, district: str, since: float, until: float, camera_id: str | None = None
    ) -> list[Transition]:
        """Transitions inside [since, until] plus, per camera, the last one before `since`."""
        ...

    def presence(self, district: str, since: float, until: float) -> list[tuple[float, str]]:
        """(at, state) of the district agent's accepted presence inside [since, until], plus the last one
        before `since`, in time order (a repeated state may appear twice)."""
        ...

    def health_counts(self, district: str) -> dict[str, int]:
        """Cameras by state in the district's latest health snapshot."""
        ...

    def camera_counts(self) -> dict[tuple[str, str], int]:
        """Cameras in the index by (district, current state) as `cameras` shows it: "unknown" before a
        camera's first report and while its district's agent is offline."""
        ...

    def agent_states(self) -> dict[str, str]:
        """District -> the state its agent last announced (online, offline, ...)."""
        ...

    def clips(self) -> list[ClipRow]: ...

    def upsert_clips(self, rows: list[ClipRow]) -> None: ...

    def set_missing(self, request_ids: list[str], missing: bool) -> None: ...

    def replace_clips(self, rows: list[ClipRow]) -> int:
        """Swap the whole clip index for `rows` in one transaction; the number of rows it replaced."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[Tx]:
        """One transaction for the platform's writes (collector/index/tx.py)."""
        ...

    def reading(self) -> contextlib.AbstractContextManager[Tx]:
        """A read-only `Tx` for the API's queries (collector/index/queries.py); takes no write lock."""
        ...

    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """A store for `sqlite:///path` or `postgresql://...` (not migrated: call `migrate()`)."""
    if url.startswith("sqlite://"):
        from collector.index.store_sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from collector.index.store_postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
