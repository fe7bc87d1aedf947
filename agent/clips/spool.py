"""Store-and-forward of clips on the agent's disk: every clip is written here before it goes anywhere.

Per request, in `spool_dir`: `{request}.job.json` (the request and how far it got, replaced atomically),
`{request}.mp4` (written by the capture), `{request}.mp4.progress.json` (the capture's per-fragment sidecar)
and `{request}.jpg` (thumbnail). A job is `queued`, `capturing`, `captured` (the final marker: the capture
ended and its result is recorded), `uploaded`, or `failed`. A job found in `capturing` after a restart was cut
short (crash, SIGKILL, power): the service trims its file to the last complete fragment and uploads that.

Space policy (`spool_max_bytes`): a new clip reserves window x estimated bitrate. When that does not fit,
clips already uploaded are evicted, oldest first, routine before others. If it still does not fit, routine
requests are refused ("spool full") while 112/119/disaster/vulnerable requests are still taken: evidence is
never refused or dropped for space; `full` turns on (the cctv_agent_spool_full alert) until space is back.
Clips not yet uploaded are never evicted.

Retention of failed clips (`failed_retention_s`): what a failed job left (its job file, any partial video) is
kept for a person to look at, then deleted by `prune_failed`. Its age is that of the job file, last written
when the job failed. Only `failed` jobs are pruned this way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.clips.stream import TimeSource
from contract.manifest import Recording
from contract.messages import ClipRequest, ClipSource

log = logging.getLogger(__name__)

JobState = Literal["queued", "capturing", "captured", "uploaded", "failed"]
SUFFIXES = (".mp4", ".mp4.progress.json", ".jpg", ".job.json")


class CaptureInfo(BaseModel):
    """What the capture produced (persisted form of the capture side's CaptureResult, minus the thumbnail)."""

    model_config = ConfigDict(extra="forbid")

    covered_start: datetime | None = None
    covered_end: datetime | None = None
    wallclock_source: TimeSource = "local"
    wallclock_uncertainty_s: float | None = None
    size_bytes: int = 0
    sha256: str = ""
    codec: str = ""
    width: int = 0
    height: int = 0
    complete: bool = False
    error: str | None = None
    gaps: list[tuple[datetime, datetime]] = Field(default_factory=list)  # recorded clips: missing stretches
    recording: Recording | None = None  # recorded clips: which recording, on which device


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: ClipRequest
    state: JobState = "queued"
    source: ClipSource | None = None  # chosen at admission; None in job files from before it was recorded
    received_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    capture: CaptureInfo | None = None
    # Why the clip is shorter than asked (stream lost, agent restarted), reported with the result.
    partial_reason: str | None = None
    object_key: str | None = None
    thumbnail_key: str | None = None
    manifest_key: str | None = None
    upload_attempts: int = 0

    @property
    def request_id(self) -> str:
        return self.request.request_id


class Spool:
    def __init__(self, root: Path, max_bytes: int, failed_retention_s: float = 7 * 86_400.0) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.failed_retention_s = failed_retention_s
        self.full = False
        self._reserved: dict[str, int] = {}
        root.mkdir(parents=True, exist_ok=True)

    def clip_path(self, request_id: str) -> Path:
        return self.root / f"{request_id}.mp4"

    def thumbnail_path(self, request_id: str) -> Path:
        return self.root / f"{request_id}.jpg"

    def job_path(self, request_id: str) -> Path:
        return self.root / f"{request_id}.job.json"

    def save(self, job: Job) -> None:
        """Replace the job file atomically and durably (written, fsynced, renamed, directory fsynced)."""
        path = self.job_path(job.request_id)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            f.write(job.model_dump_json())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        _fsync_dir(self.root)

    def jobs(self) -> list[Job]:
        """Every job on disk, oldest first; unreadable job files are renamed `.corrupt` and skipped."""
        found: list[Job] = []
        for path in self.root.glob("*.job.json"):
            try:
                found.append(Job.model_validate_json(path.read_bytes()))
            except FileNotFoundError:
                continue  # removed while listed (evicted, or pruned from a worker thread)
            except (OSError, ValidationError, json.JSONDecodeError) as exc:
                log.error("unreadable spool job %s (%s); set aside", path.name, exc)
                path.replace(path.with_name(path.name + ".corrupt"))
        return sorted(found, key=lambda job: job.received_at)

    def remove(self, request_id: str) -> None:
        self._delete_files(request_id)
        self._reserved.pop(request_id, None)

    def prune_failed(self, now: float, busy: Collection[str] = ()) -> list[str]:
        """Delete the files of jobs that failed more than `failed_retention_s` before `now` (epoch seconds),
        except those in `busy`; their request ids. Touches files only (no reservations), so it may run in a
        worker thread: it reads the job file of old jobs only, and leaves unreadable ones to `jobs()`."""
        cutoff = now - self.failed_retention_s
        pruned: list[str] = []
        for path in self.root.glob("*.job.json"):
            request_id = path.name.removesuffix(".job.json")
            if request_id not in busy and _modified(path) < cutoff and _state(path) == "failed":
                self._delete_files(request_id)
                pruned.append(request_id)
        if pruned:
            log.info("deleted %s failed clips past their retention from the spool", len(pruned))
        return pruned

    def _delete_files(self, request_id: str) -> None:
        # The job file last: a crash midway leaves a job that is still pruned or resumed next time.
        for suffix in SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                (self.root / f"{request_id}{suffix}").unlink()

    def usage_bytes(self) -> int:
        total = 0
        with os.scandir(self.root) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size if entry.is_file() else 0
        return total

    def committed_bytes(self) -> int:
        """Bytes on disk plus what running and queued captures are still expected to write."""
        unwritten = 0
        for request_id, reserved in self._reserved.items():
            unwritten += max(0, reserved - _size(self.clip_path(request_id)))
        return self.usage_bytes() + unwritten

    def admit(self, request_id: str, estimate_bytes: int, *, routine: bool) -> bool:
        """Reserve room for a new clip; False means refuse it (routine only; see the module's policy)."""
        fits = self._make_room(estimate_bytes)
        self.full = not fits
        if not fits and routine:
            return False
        if not fits:
            log.error("spool over its limit; taking priority clip %s anyway", request_id)
        self._reserved[request_id] = estimate_bytes
        return True

    def release(self, request_id: str) -> None:
        """The capture is over: its file now counts by its real size."""
        self._reserved.pop(request_id, None)
        if self.full and self.committed_bytes() <= self.max_bytes:
            self.full = False

    def _make_room(self, need: int) -> bool:
        excess = self.committed_bytes() + need - self.max_bytes
        if excess <= 0:
            return True
        uploaded = [job for job in self.jobs() if job.state == "uploaded"]
        uploaded.sort(key=lambda job: (job.request.priority != "routine", job.received_at))
        for job in uploaded:
            freed = sum(_size(self.root / f"{job.request_id}{suffix}") for suffix in SUFFIXES)
            log.info("evicting uploaded clip %s from the spool (%s bytes)", job.request_id, freed)
            self.remove(job.request_id)
            excess -= freed
            if excess <= 0:
                return True
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _modified(path: Path) -> float:
    """Last write time; +inf for a file gone meanwhile, so it is never taken for old."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _state(path: Path) -> JobState | None:
    try:
        return Job.model_validate_json(path.read_bytes()).state
    except (OSError, ValidationError):
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
