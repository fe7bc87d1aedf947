"""Streaming multipart upload of a clip still being written, under a shared bandwidth cap and priority order.

The capture appends whole MP4 fragments to the spool file; bytes once written never change. The uploader
tails the file: each time `part_size` new bytes exist it sends them as a part, and when the capture says it is
done it sends the rest as the last part and completes the upload, so the object exists about a part's transfer
time after the window ends.

The object's `sha256` metadata: S3 fixes metadata when the multipart upload is created, before the digest of
a growing file is known. So a streamed clip is completed first and then copied onto itself with the digest
added (RGW copies within a bucket by reference, not by data). A file that is already complete (a retry from
the spool) is hashed first and uploaded with the digest in one go.

Retries are layered without overlap (as in s3transfer): botocore retries throttling, 5xx and connection errors
of each request; this module retries a whole part on socket errors that survive that; the spool retries the
whole clip later with backoff when S3 stays unreachable. A failed upload is aborted (best effort); what
an abort could not reach (S3 down, agent killed) is found and aborted by `abort_stale` before the retry.
Every S3 call goes through `s3_call` (s3.py), which says what an error means: retry, or a person must act.

All uploads of the agent share one `UploadScheduler`: at most `max_parallel` parts in flight, the waiting part
with the best rank goes next (`upload_rank`: 112 first; within a priority a live segment before a clip part;
FIFO within a rank), and a token bucket caps the bit rate. Live segments (agent/live/) have their own lane of
slots, so a live segment never waits for a clip part to finish: only for its turn at the bucket.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from agent.backoff import full_jitter
from agent.clips.s3 import UploadError, UploadVanishedError, s3_call
from contract.messages import PRIORITY_RANK, Priority

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)


class _TruncatedError(Exception):
    """The file got shorter than what was already sent: the capture cut it; send it again from the start."""


RESTART = (_TruncatedError, UploadVanishedError)  # start the object again
Lane = Literal["clip", "live"]


def upload_rank(priority: Priority, *, live: bool = False) -> int:
    """Upload order (lower first): by priority; within one, live segments (small, latency-bound) first."""
    return 2 * PRIORITY_RANK[priority] + (0 if live else 1)


@dataclass(frozen=True)
class ObjectLock:
    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    days: int

    def params(self) -> dict[str, Any]:
        until = datetime.now(UTC) + timedelta(days=self.days)
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": until}


@dataclass(frozen=True)
class UploadJob:
    bucket: str
    key: str
    path: Path
    rank: int  # PRIORITY_RANK of the request: lower goes first
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str = "video/mp4"
    lock: ObjectLock | None = None


@dataclass(frozen=True)
class UploadResult:
    key: str
    size_bytes: int
    sha256: str
    parts: int
    completed_monotonic: float


class UploadScheduler:
    """Shared by every upload: bounded requests in flight per lane, best rank first, a token-bucket bit-rate
    cap. The bucket may go into debt by one part (a part is sent at line speed); the long-run rate is the cap.
    A waiting request goes when its lane has a free slot and no better one that could go is waiting."""

    def __init__(self, max_parallel: int, bandwidth_bps: int = 0, *, live_parallel: int = 4) -> None:
        self._max: dict[Lane, int] = {"clip": max_parallel, "live": live_parallel}
        self._rate = bandwidth_bps / 8  # bytes per second; 0 = unlimited
        self._tokens = 0.0
        self._stamp = time.monotonic()
        self._active: dict[Lane, int] = {"clip": 0, "live": 0}
        self._waiting: list[tuple[int, int, Lane]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self, rank: int, nbytes: int, lane: Lane = "clip") -> Iterator[None]:
        ticket = (rank, next(self._seq), lane)
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            while not self._may_go(ticket):
                self._cond.wait(self._token_wait())
            self._waiting.remove(ticket)
            heapq.heapify(self._waiting)
            self._active[lane] += 1
            self._tokens -= nbytes if self._rate else 0
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._active[lane] -= 1
                self._cond.notify_all()

    def _may_go(self, ticket: tuple[int, int, Lane]) -> bool:
        free = [t for t in self._waiting if self._active[t[2]] < self._max[t[2]]]
        if not free or min(free) != ticket:
            return False
        if self._rate:
            now = time.monotonic()
            self._tokens = min(self._rate, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            return self._tokens >= 0
        return True

    def _token_wait(self) -> float | None:
        if self._rate and self._tokens < 0:
            return max(0.001, -self._tokens / self._rate)
        return None


class Uploader:
    """Uploads files to S3; thread-safe, one instance per agent, called from worker threads."""

    def __init__(
        self,
        client: S3Client,
        scheduler: UploadScheduler,
        part_size: int,
        *,
        parallel_parts: int = 4,
        part_retries: int = 2,
        poll_s: float = 0.05,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self._scheduler = scheduler
        self._part_size = part_size
        self._parallel = parallel_parts  # memory: up to parallel_parts x part_size per upload
        self._part_retries = part_retries
        self._poll_s = poll_s
        self._on_bytes = on_bytes

    def upload_file(
        self, job: UploadJob, finished: threading.Event, cancel: threading.Event | None = None
    ) -> UploadResult:
        """Upload `job.path`, which may still grow until `finished` is set. Raises UploadError."""
        for _ in range(3):
            try:
                return self._upload_once(job, finished, cancel)
            except RESTART:
                log.warning("clip %s was cut or lost while uploading; sending it again", job.key)
        raise UploadError(f"{job.key}: file kept changing under the upload", transient=True)

    def put_bytes(self, job: UploadJob, body: bytes) -> None:
        """A small object (thumbnail, manifest) in one request, with the same lock and a whole-part retry."""
        extra: dict[str, Any] = job.lock.params() if job.lock else {}
        self.put_object(
            job.bucket, job.key, body, rank=job.rank, content_type=job.content_type, metadata=job.metadata,
            **extra,
        )  # fmt: skip

    def put_object(
        self, bucket: str, key: str, body: bytes, *, rank: int, content_type: str,
        metadata: dict[str, str], lane: Lane = "clip", **extra: Any,
    ) -> None:  # fmt: skip
        """One object in one PUT (Content-MD5 checked by S3) in `lane`, with a whole-request retry. Raises
        UploadError."""
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        self._with_part_retries(
            key,
            lambda: self.client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata,
                ContentMD5=md5, **extra,
            ),
            rank,
            len(body),
            lane,
        )  # fmt: skip

    def _upload_once(
        self, job: UploadJob, finished: threading.Event, cancel: threading.Event | None
    ) -> UploadResult:
        metadata = dict(job.metadata)
        streamed = not finished.is_set()
        if not streamed:
            metadata["sha256"] = _file_sha256(job.path)
        extra: dict[str, Any] = job.lock.params() if job.lock else {}
        created = s3_call(
            job.key,
            lambda: self.client.create_multipart_upload(
                Bucket=job.bucket, Key=job.key, ContentType=job.content_type, Metadata=metadata, **extra
            ),
        )
        upload_id = created["UploadId"]
        try:
            size, digest, parts = self._send_parts(job, upload_id, finished, cancel)
            completed = s3_call(
                job.key,
                lambda: self.client.complete_multipart_upload(
                    Bucket=job.bucket, Key=job.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            self._abort(job, upload_id)
            raise
        if streamed:
            self._set_digest(job, metadata | {"sha256": digest}, extra)
            if job.lock and completed.get("VersionId"):
                self._retain(job, completed["VersionId"])  # the version before the digest was added
        if job.lock:
            self._retain(job, None)
        return UploadResult(job.key, size, digest, len(parts), time.monotonic())

    def _retain(self, job: UploadJob, version_id: str | None) -> None:
        """Set retention explicitly: RGW ignores the lock headers of CreateMultipartUpload and CopyObject."""
        assert job.lock is not None
        lock = job.lock.params()
        mode, until = lock["ObjectLockMode"], lock["ObjectLockRetainUntilDate"]
        retention: Any = {"Mode": mode, "RetainUntilDate": until}
        version: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        s3_call(
            job.key,
            lambda: self.client.put_object_retention(
                Bucket=job.bucket, Key=job.key, Retention=retention, **version
            ),
        )

    def _send_parts(
        self, job: UploadJob, upload_id: str, finished: threading.Event, cancel: threading.Event | None
    ) -> tuple[int, str, list[CompletedPartTypeDef]]:
        """Read the file in order (hashing it), send up to `parallel_parts` parts of it at once."""
        digest = hashlib.sha256()
        sent: list[Future[CompletedPartTypeDef]] = []
        offset = 0
        executor = ThreadPoolExecutor(self._parallel, thread_name_prefix="s3-part")
        with _Tail(job.path) as tail, executor as pool:
            try:
                while True:
                    if cancel is not None and cancel.is_set():
                        raise UploadError(f"{job.key}: cancelled", transient=True)
                    done = finished.is_set()  # read before the size: after `done`, the size is final
                    size = tail.size()
                    if size < offset:
                        raise _TruncatedError
                    if size - offset >= self._part_size or (done and size > offset):
                        body = tail.read(offset, min(self._part_size, size - offset))
                        digest.update(body)
                        self._throttle(sent)
                        sent.append(pool.submit(self._part, job, upload_id, len(sent) + 1, body))
                        offset += len(body)
                    elif done:
                        break
                    else:
                        finished.wait(self._poll_s)
                if not sent:
                    raise UploadError(f"{job.key}: nothing was captured", transient=False)
                parts = [future.result() for future in sent]
            except BaseException:
                for future in sent:
                    future.cancel()
                raise
        return offset, digest.hexdigest(), parts

    def _throttle(self, sent: list[Future[CompletedPartTypeDef]]) -> None:
        """Wait while `parallel_parts` parts are in flight; raise the error of a part that failed."""
        while True:
            running = [future for future in sent if not future.done()]
            for future in sent:
                if future.done():
                    future.result()
            if len(running) < self._parallel:
                return
            wait(running, return_when=FIRST_COMPLETED)

    def _part(self, job: UploadJob, upload_id: str, number: int, body: bytes) -> CompletedPartTypeDef:
        extra: dict[str, Any] = {}
        if job.lock:  # Object Lock buckets want an integrity header on every write
            extra["ContentMD5"] = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        response = self._with_part_retries(
            job.key,
            lambda: self.client.upload_part(
                Bucket=job.bucket, Key=job.key, UploadId=upload_id, PartNumber=number, Body=body, **extra
            ),
            job.rank,
            len(body),
        )
        if self._on_bytes is not None:
            self._on_bytes(len(body))
        return {"ETag": response["ETag"], "PartNumber": number}

    def _with_part_retries(
        self, key: str, call: Callable[[], Any], rank: int, nbytes: int, lane: Lane = "clip"
    ) -> Any:
        for attempt in range(self._part_retries + 1):
            try:
                with self._scheduler.slot(rank, nbytes, lane):
                    return s3_call(key, call)
            except UploadError as exc:
                if not exc.transient or attempt == self._part_retries:
                    raise
                time.sleep(full_jitter(0.5, 4.0, attempt))
        raise AssertionError("unreachable")

    def _set_digest(self, job: UploadJob, metadata: dict[str, str], extra: dict[str, Any]) -> None:
        s3_call(
            job.key,
            lambda: self.client.copy_object(
                Bucket=job.bucket,
                Key=job.key,
                CopySource={"Bucket": job.bucket, "Key": job.key},
                MetadataDirective="REPLACE",
                Metadata=metadata,
                ContentType=job.content_type,
                **extra,
            ),
        )

    def abort_stale(self, job: UploadJob) -> int:
        """Abort the unfinished multipart uploads of `job.key` that an earlier attempt left (its abort failed
        in an outage, or the agent was killed); how many. Raises UploadError (the next retry does it)."""
        listed = s3_call(
            job.key, lambda: self.client.list_multipart_uploads(Bucket=job.bucket, Prefix=job.key)
        )
        stale = [u["UploadId"] for u in listed.get("Uploads", []) if u.get("Key") == job.key]
        for upload_id in stale:
            s3_call(job.key, functools.partial(self._abort_call, job, upload_id))
        if stale:
            log.info("aborted %s unfinished multipart uploads of %s left before", len(stale), job.key)
        return len(stale)

    def _abort_call(self, job: UploadJob, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=job.bucket, Key=job.key, UploadId=upload_id)

    def _abort(self, job: UploadJob, upload_id: str) -> None:
        try:
            self._abort_call(job, upload_id)
        except Exception as exc:  # the gateway may be the reason we are here; RGW expires stale parts
            log.info("could not abort multipart upload of %s: %s", job.key, exc)


class _Tail:
    """Reads a file that may not exist yet and may still be growing."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: BinaryIO | None = None

    def __enter__(self) -> _Tail:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def size(self) -> int:
        try:
            return self._path.stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, offset: int, length: int) -> bytes:
        if self._file is None:
            self._file = self._path.open("rb")
        self._file.seek(offset)
        data = self._file.read(length)
        if len(data) != length:
            raise _TruncatedError
        return data


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()
