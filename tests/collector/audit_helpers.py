"""Building and tampering with an audit trail in tests: records, a locked checkpoint bucket, settings."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.audit.chain import (
    FIELDS,
    GENESIS,
    AuditRecord,
    AuditSubject,
    Head,
    append,
    chain_hash,
    entries,
)
from collector.index.store import Store
from tests.services import CephS3

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

KST = timezone(timedelta(hours=9))
T0 = datetime(2026, 11, 3, 10, 0, tzinfo=KST)  # a Tuesday morning


def record(i: int = 0, **fields: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "at": T0 + timedelta(minutes=i),
        "account": "officer-1",
        "agency": "police-112",
        "client_ip": "10.1.2.3",
        "action": "clip.request",
        "purpose": "missing child search",
        "incident": "inc-1",
        "subjects": [AuditSubject(camera_id=f"cam-{i}", district="gangnam", start=0.0, end=30.0)],
        "result": "allowed",
        "detail": {"n": i},
    }
    return AuditRecord(**(values | fields))


def fill(store: Store, n: int) -> list[Head]:
    heads = []
    for i in range(n):
        with store.transaction() as tx:
            heads.append(append(tx, record(i)))
    return heads


def tamper(store: Store, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """What someone who owns the database can do: lift the append-only triggers, then change rows."""
    with store.transaction() as tx:
        if tx.engine == "postgres":
            tx.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        else:
            tx.execute("DROP TRIGGER audit_log_no_update")
            tx.execute("DROP TRIGGER audit_log_no_delete")
        for statement, params in statements:
            tx.execute(statement, params)


def row(store: Store, seq: int) -> dict[str, Any]:
    columns = ("seq", *FIELDS, "prev_hash", "hash")
    with store.transaction() as tx:
        values = tx.query(f"SELECT {', '.join(columns)} FROM audit_log WHERE seq = ?", (seq,))[0]  # noqa: S608
    return dict(zip(columns, values, strict=True))


def update_row(seq: int, values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    assignments = ", ".join(f"{n} = ?" for n in values)
    return f"UPDATE audit_log SET {assignments} WHERE seq = ?", (*values.values(), seq)  # noqa: S608


def rewrite_from(store: Store, seq: int, **change: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """Statements that change plain columns of record `seq` and recompute every hash from there on and the
    head: a chain consistent in itself, as someone with the database and this code could make it."""
    statements = []
    prev_hash = row(store, seq - 1)["hash"] if seq > 1 else GENESIS
    last = seq
    for entry in entries(store, after=seq - 1):
        changed = change if entry.seq == seq else {}
        digest = chain_hash(prev_hash, entry.document | changed)
        statements.append(update_row(entry.seq, changed | {"prev_hash": prev_hash, "hash": digest}))
        prev_hash, last = digest, entry.seq
    statements.append(("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (last, prev_hash)))
    return statements


def locked_bucket(ceph_s3: CephS3) -> tuple[S3Client, str]:
    client = ceph_s3.client()
    name = f"audit-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return client, name


def config_file(ceph_s3: CephS3, bucket: str, store_url: str, tmp_path: Path, interval_s: float = 60) -> Path:
    """A collector TOML file for the store, the gateway and an audit bucket (key in tmp_path)."""
    path = tmp_path / "collector.toml"
    path.write_text(
        f'[store]\nurl = "{store_url}"\n'
        f'[s3]\nendpoint_url = "{ceph_s3.endpoint}"\nregion = "{ceph_s3.region}"\n'
        f'access_key = "{ceph_s3.access_key}"\nsecret_key = "{ceph_s3.secret_key}"\n'
        f'[audit]\nbucket = "{bucket}"\nkey_path = "{tmp_path / "audit-key.pem"}"\n'
        f"checkpoint_interval_s = {interval_s}\nretention_days = 365\n"
    )
    return path
