"""Signed checkpoints of the audit chain's head, kept where the database's owner cannot reach them.

A checkpoint {seq, hash, at} is signed with the collector's Ed25519 audit key (common/signing.py) and written
as one S3 object, `<prefix>checkpoints/<seq>-<UTC time>.json`, retained in Object Lock COMPLIANCE mode for the
audit retention: no account, root included, can delete it or shorten its retention before then. A versioned
bucket still lets anyone put a new version over a key or a delete marker on it, so readers list every version
(`CheckpointBucket.read_all`): an old version stays there and stays checked.

`Checkpointer` writes one at least every `checkpoint_interval_s` while the head moves (`cctv-collector run`
runs it as a thread; `checkpoint_now()` for tests and shutdown). What a checkpoint does not cover yet, the
records of the last interval, is the window in which a cut tail would go unnoticed.

Before it signs a head, it checks the records since the last head it checked (all of them, the first time in
a process): each one's hash, its link to its predecessor, no gap, and the head's hash. A broken chain is never
anchored: the checkpointer reports it (`cctv_collector_audit_chain_ok` 0, failure reason `chain_broken`) and
writes no checkpoint until a person has looked (`cctv-collector audit verify` names the first bad record).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collector.audit.chain import GENESIS, Head, entries, head
from collector.audit.links import Problem, check_since
from collector.config import AuditSettings, CollectorSettings
from collector.index.store import Store, StoreError, StoreUnavailableError, open_store
from common.s3 import make_client
from common.signing import key_id, load_or_create_key, load_public_key, sign, signature_problem, signed_body
from contract.signature import Signature

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)

FAILURE_REASONS = ("store", "s3", "no_object_lock", "chain_broken")
READERS = 8


class CheckpointError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    seq: int = Field(ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    at: float  # Unix seconds when it was taken
    signature: Signature | None = None


def signed_checkpoint(at_head: Head, at: float, key: Ed25519PrivateKey) -> Checkpoint:
    unsigned = Checkpoint(seq=at_head.seq, hash=at_head.hash, at=at)
    return unsigned.model_copy(update={"signature": sign(signed_body(unsigned), key)})


@dataclass(frozen=True)
class StoredCheckpoint:
    """One object version under the checkpoints prefix: its checkpoint if it is one, signed by a trusted
    key, else why not."""

    key: str
    version_id: str
    checkpoint: Checkpoint | None
    problem: str | None


class CheckpointBucket:
    """The checkpoints' bucket: write one under compliance retention, read every version back."""

    def __init__(self, client: S3Client, bucket: str, prefix: str, retention_days: int) -> None:
        self.client, self.bucket, self.retention_days = client, bucket, retention_days
        self.prefix = prefix + "checkpoints/"

    def check(self) -> None:
        """CheckpointError unless the bucket was created with Object Lock (else retention cannot be set)."""
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ObjectLockConfigurationNotFoundError":
                raise CheckpointError("no_object_lock", f"bucket {self.bucket} has no Object Lock") from exc
            raise CheckpointError("s3", f"bucket {self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise CheckpointError("s3", f"bucket {self.bucket}: {exc}") from exc
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise CheckpointError("no_object_lock", f"bucket {self.bucket} has no Object Lock")

    def key_of(self, checkpoint: Checkpoint) -> str:
        taken = datetime.fromtimestamp(checkpoint.at, UTC)
        return f"{self.prefix}{checkpoint.seq:012d}-{taken:%Y%m%dT%H%M%S%fZ}.json"

    def write(self, checkpoint: Checkpoint) -> str:
        key = self.key_of(checkpoint)
        until = datetime.now(UTC) + timedelta(days=self.retention_days)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=checkpoint.model_dump_json().encode(),
                ContentType="application/json",
                ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=until,
            )
        except (ClientError, BotoCoreError) as exc:
            raise CheckpointError("s3", f"writing {key}: {exc}") from exc
        return key

    def read_all(self, trusted: dict[str, Ed25519PublicKey]) -> list[StoredCheckpoint]:
        """Every version of every object under the prefix, lowest seq first, checked against `trusted`."""
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            versions = [(v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions", [])]
            # One GET each (a year holds up to ~500,000), in parallel within botocore's 10 pooled connections.
            with ThreadPoolExecutor(READERS) as pool:
                found = list(pool.map(lambda v: self._read(v[0], v[1], trusted), versions))
        except (ClientError, BotoCoreError) as exc:
            raise CheckpointError("s3", f"reading {self.bucket}/{self.prefix}: {exc}") from exc
        return sorted(found, key=lambda s: (s.checkpoint.seq if s.checkpoint else 0, s.key))

    def _read(self, key: str, version_id: str, trusted: dict[str, Ed25519PublicKey]) -> StoredCheckpoint:
        body = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)["Body"].read()
        try:
            checkpoint = Checkpoint.model_validate_json(body)
        except ValidationError as exc:
            return StoredCheckpoint(key, version_id, None, f"not a checkpoint ({exc.error_count()} errors)")
        problem = signature_problem(signed_body(checkpoint), checkpoint.signature, trusted)
        if problem is not None:
            return StoredCheckpoint(key, version_id, None, problem)
        return StoredCheckpoint(key, version_id, checkpoint, None)


def open_bucket(settings: CollectorSettings) -> CheckpointBucket:
    audit = settings.audit
    return CheckpointBucket(make_client(settings.s3), audit.bucket, audit.prefix, audit.retention_days)


def trusted_keys(settings: AuditSettings) -> dict[str, Ed25519PublicKey]:
    """The public keys checkpoints may be signed with (OSError or ValueError for an unreadable file)."""
    if not settings.public_keys:
        if not settings.key_path.exists():  # never trust a key made up on the spot
            raise ValueError(f"audit.public_keys is empty and {settings.key_path} does not exist")
        public = load_or_create_key(settings.key_path).public_key()
        return {key_id(public): public}
    keys = [load_public_key(path.read_bytes()) for path in settings.public_keys]
    return {key_id(k): k for k in keys}


class CheckpointMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.age = Gauge(
            "cctv_collector_audit_checkpoint_age_seconds",
            "Seconds since a checkpoint last covered the audit head (written, or the head had not moved)",
            registry=registry,
        )
        self.seq = Gauge(
            "cctv_collector_audit_checkpoint_seq",
            "Sequence number of the last checkpoint written",
            registry=registry,
        )
        self.failures = Counter(
            "cctv_collector_audit_checkpoint_failures_total",
            "Checkpoint attempts that failed, by reason (store, s3, no_object_lock, chain_broken)",
            ["reason"],
            registry=registry,
        )
        for reason in FAILURE_REASONS:
            self.failures.labels(reason=reason)
        self.chain_ok = Gauge(
            "cctv_collector_audit_chain_ok",
            "1 when the records checked before the last checkpoint chained correctly, 0: the chain is broken",
            registry=registry,
        )
        self.chain_ok.set(math.nan)  # unknown until the first check: a start is no broken chain


class Checkpointer:
    """Writes a signed checkpoint of the head at least every `interval_s` when it moved, in its own thread."""

    def __init__(
        self,
        read_head: Callable[[], Head],
        check_chain: Callable[[Head, int], tuple[Head, Problem | None]],
        bucket: CheckpointBucket,
        key: Ed25519PrivateKey,
        *,
        interval_s: float,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._read_head, self._bucket, self._key, self._interval_s = read_head, bucket, key, interval_s
        self._check_chain = check_chain
        self._checked = Head(0, GENESIS)  # the last head whose records were checked
        self._clock, self._lock, self._stop = clock, threading.Lock(), threading.Event()
        self._written: Head | None = None
        self._covered_at = clock()
        self._thread: threading.Thread | None = None
        self.metrics = CheckpointMetrics(registry)
        self.metrics.age.set_function(lambda: self._clock() - self._covered_at)

    @classmethod
    def from_settings(cls, settings: CollectorSettings, registry: CollectorRegistry) -> Checkpointer:
        """Reads the head through a store of its own per checkpoint (a connection belongs to one thread).
        Only for a configured `audit.bucket`."""
        if not settings.audit.bucket:
            raise ValueError("audit.bucket is not configured")
        url = settings.store.url

        def read_head() -> Head:
            with _store(url) as store:
                return head(store)

        def check_chain(prev: Head, until: int) -> tuple[Head, Problem | None]:
            with _store(url) as store:
                return check_since(prev, entries(store, after=prev.seq), until)

        key = load_or_create_key(settings.audit.key_path)
        interval = settings.audit.checkpoint_interval_s
        bucket = open_bucket(settings)
        return cls(read_head, check_chain, bucket, key, interval_s=interval, registry=registry)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-checkpointer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread; then checkpoint once more, so that a clean shutdown leaves no tail uncovered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._attempt()

    def checkpoint_now(self) -> Checkpoint | None:
        """Write a checkpoint of the current head unless one already covers it (then None)."""
        with self._lock:
            now = self._clock()
            current = self._read_head()
            if current.seq == 0 or current == self._written:
                self._covered_at = now
                if current.seq == 0:
                    self.metrics.chain_ok.set(1)  # an empty chain holds
                return None
            if self._written is None:
                self._bucket.check()
            self._check(current)
            checkpoint = signed_checkpoint(current, now, self._key)
            key = self._bucket.write(checkpoint)
            self._written, self._covered_at = current, now
        self.metrics.seq.set(current.seq)
        log.debug("audit checkpoint seq %s written to %s", current.seq, key)
        return checkpoint

    def _check(self, current: Head) -> None:
        """Check the records up to `current` that were not checked yet; CheckpointError if they are broken."""
        if current.seq <= self._checked.seq:
            return
        reached, problem = self._check_chain(self._checked, current.seq)
        if problem is None and reached != current:
            problem = Problem(current.seq, f"the head (seq {current.seq}) is not where the chain ends (seq "
                              f"{reached.seq}, hash {reached.hash[:12]})")  # fmt: skip
        if problem is not None:
            self.metrics.chain_ok.set(0)
            raise CheckpointError(
                "chain_broken", f"audit chain broken at seq {problem.seq}: {problem.reason}"
            )
        self._checked = current
        self.metrics.chain_ok.set(1)

    def _run(self) -> None:
        while True:
            self._attempt()
            if self._stop.wait(self._interval_s):
                return

    def _attempt(self) -> None:
        try:
            self.checkpoint_now()
        except StoreError as exc:
            self.metrics.failures.labels(reason="store").inc()
            log.warning("audit checkpoint: cannot read the head: %s", exc)
        except CheckpointError as exc:
            self.metrics.failures.labels(reason=exc.reason).inc()
            log.error("audit checkpoint not written: %s", exc)


@contextlib.contextmanager
def _store(url: str) -> Iterator[Store]:
    """A store of its own for one read (a connection belongs to one thread)."""
    try:
        store = open_store(url)
    except Exception as exc:  # the driver's own connection error
        raise StoreUnavailableError(str(exc)) from exc
    try:
        yield store
    finally:
        store.close()
