"""The audit log itself: append a record to the hash chain in the caller's transaction, read it back.

Each record is stored with its sequence number, the previous record's hash and its own:

    hash(seq) = sha256(bytes.fromhex(hash(seq - 1)) + canonical_json(document(seq)))

where document(seq) is the record's JSON form (common/signing.canonical_json) including `seq`, and the hash of
"seq 0", the genesis, is 64 zeros (GENESIS). A changed, removed or reordered record breaks the chain; a cut
tail or a rewritten chain is caught by the signed checkpoints (checkpoints.py, verify.py).

`append` (`append_many` for several records) reads and moves the one-row `audit_head` under a row lock, so
concurrent appends form one chain, and commits with the action the record describes (the caller's Tx). The
lock is held until that commit: append once, as the transaction's last statement, so audited transactions
wait on each other as briefly as possible.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from collector.index.store import Store
from collector.index.tx import Tx
from common.signing import canonical_json

GENESIS = "0" * 64
Result = Literal["allowed", "refused", "error"]
# The record's fields in column order; `subjects` and `detail` are stored as canonical JSON text.
FIELDS = (
    "at",
    "account",
    "agency",
    "client_ip",
    "action",
    "purpose",
    "incident",
    "subjects",
    "result",
    "code",
    "detail",
)
_JSON_FIELDS = ("subjects", "detail")
PAGE = 2000


def _epoch(value: Any) -> Any:
    return value.timestamp() if isinstance(value, datetime) else value


class AuditSubject(BaseModel):
    """A data subject's place and time: the camera and, for footage, the window (Unix seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera_id: str
    district: str
    start: float | None = None
    end: float | None = None

    _as_epoch = field_validator("start", "end", mode="before")(_epoch)


class AuditRecord(BaseModel):
    """Who did what, when, from where, why, to which subjects, with what result (PIPA safety rules Art. 8)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: float = Field(default_factory=time.time)  # Unix seconds (a datetime is converted)
    account: str
    agency: str
    client_ip: str = ""
    action: str  # collector.access.decision.Action, or "grant.change", "policy.load"
    purpose: str = ""
    incident: str | None = None
    subjects: tuple[AuditSubject, ...] = ()
    result: Result
    code: str = "ok"  # the decision or error code
    detail: dict[str, Any] = Field(default_factory=dict)

    _as_epoch = field_validator("at", mode="before")(_epoch)


class Head(NamedTuple):
    """A position in the chain: (seq, hash)."""

    seq: int
    hash: str


@dataclass(frozen=True)
class Entry:
    """A stored record as read back: its document (what the hash covers) and the hashes stored with it."""

    seq: int
    prev_hash: str
    hash: str
    document: dict[str, Any]
    problem: str | None = None  # the stored row cannot be read as a document (tampered JSON)

    def record(self) -> AuditRecord:
        return AuditRecord.model_validate({k: v for k, v in self.document.items() if k != "seq"})


def document(seq: int, record: AuditRecord) -> dict[str, Any]:
    return {"seq": seq, **record.model_dump(mode="json")}


def chain_hash(prev_hash: str, doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(doc)).hexdigest()


_COLUMNS = ", ".join(FIELDS)
INSERT = (
    f"INSERT INTO audit_log (seq, {_COLUMNS}, prev_hash, hash) "  # noqa: S608 - constant column names
    f"VALUES ({', '.join(['?'] * (len(FIELDS) + 3))})"
)
SELECT = f"SELECT seq, {_COLUMNS}, prev_hash, hash FROM audit_log"  # noqa: S608 - constant column names


def append(tx: Tx, record: AuditRecord) -> Head:
    """Add `record` after the current head in `tx` (the transaction of the action it describes)."""
    return append_many(tx, [record])


def append_many(tx: Tx, records: Sequence[AuditRecord]) -> Head:
    """Add `records` in order after the current head in `tx`: the same chain as appending them one by one,
    in three statements (head read, one multi-row insert, head update) however many there are."""
    prev = tx.query("SELECT seq, hash FROM audit_head WHERE id = 1" + tx.for_update())[0]  # noqa: S608
    last = Head(int(prev[0]), str(prev[1]))
    if not records:
        return last
    rows = []
    for record in records:
        seq = last.seq + 1
        doc = document(seq, record)
        digest = chain_hash(last.hash, doc)
        # JSON columns are stored as text; the hash covers the parsed value, so their spelling is free.
        values = [json.dumps(doc[f], ensure_ascii=False) if f in _JSON_FIELDS else doc[f] for f in FIELDS]
        rows.append((seq, *values, last.hash, digest))
        last = Head(seq, digest)
    tx.executemany(INSERT, rows)
    tx.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", last)
    return last


def head(store: Store) -> Head:
    """The head as `audit_head` records it (seq 0 and GENESIS for an empty log)."""
    with store.transaction() as tx:
        row = tx.query("SELECT seq, hash FROM audit_head WHERE id = 1")[0]
    return Head(int(row[0]), str(row[1]))


def entries(
    store: Store, *, after: int = 0, since: float | None = None, until: float | None = None
) -> Iterator[Entry]:
    """Stored records in seq order after seq `after` (optionally with since <= at < until), read in pages of
    short transactions so that a long walk never holds the writers up."""
    where = "seq > ?"
    params: tuple[float, ...] = ()
    if since is not None and until is not None:
        where, params = "seq > ? AND at >= ? AND at < ?", (since, until)
    while True:
        with store.transaction() as tx:
            rows = tx.query(f"{SELECT} WHERE {where} ORDER BY seq LIMIT {PAGE}", (after, *params))
        for row in rows:
            yield _entry(row)
        if len(rows) < PAGE:
            return
        after = int(rows[-1][0])


def _entry(row: tuple[Any, ...]) -> Entry:
    seq, values, prev_hash, digest = int(row[0]), row[1:-2], str(row[-2]), str(row[-1])
    doc: dict[str, Any] = {"seq": seq, **dict(zip(FIELDS, values, strict=True))}
    try:
        for name in _JSON_FIELDS:
            doc[name] = json.loads(doc[name])
    except (TypeError, ValueError) as exc:
        return Entry(seq, prev_hash, digest, doc, f"{name} is not JSON ({exc})")
    return Entry(seq, prev_hash, digest, doc)
