"""Reconciling the clip index with the bucket: the bucket is the truth for what exists.

Manifests are read with the contract's model (contract/manifest.py), the one the agent writes them with.

- a `*.manifest.json` object whose clip the index does not have as `succeeded` (no entry, or one stuck at an
  earlier status because its last updates never arrived) is indexed from the manifest;
- an indexed clip whose object is not in the bucket is flagged `missing_object` (and unflagged when it
  reappears);
- `rebuild=True` builds a new clip index from the bucket's manifests alone and swaps it in for the old one in
  one transaction; when a manifest could not be fetched, or none could be read, it refuses and the index
  stays as it was.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from collector.index.store import ClipRow, Store
from contract.errors import ContractError
from contract.manifest import MANIFEST_SUFFIX, MAX_MANIFEST_BYTES, Manifest, parse_manifest

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)


class ReconcileError(Exception):
    """The bucket could not be listed: nothing was compared and the index is unchanged."""


class ManifestUnreadableError(Exception):
    """A listed manifest object could not be fetched (deleted meanwhile, access denied, connection lost)."""


@dataclass
class ReconcileResult:
    manifests: int = 0
    indexed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    invalid_reasons: Counter[str] = field(default_factory=Counter)
    duplicates: list[str] = field(default_factory=list)
    replaced: int | None = None  # rebuild: rows of the index that was swapped out
    refused: str | None = None  # rebuild: why the old index was kept

    @property
    def clean(self) -> bool:
        """Every manifest was read, every indexed clip is in the bucket, and no rebuild was refused."""
        return not (self.invalid or self.missing or self.duplicates or self.refused)

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": {
                "manifests": self.manifests,
                "indexed": len(self.indexed),
                "invalid_manifests": len(self.invalid),
                "duplicate_manifests": len(self.duplicates),
                "missing_object": len(self.missing),
                "restored": len(self.restored),
            },
            "invalid_reasons": dict(self.invalid_reasons),
            "indexed": self.indexed,
            "invalid_manifests": self.invalid,
            "duplicate_manifests": self.duplicates,
            "missing_object": self.missing,
            "restored": self.restored,
            "rebuild": None if self.replaced is None and self.refused is None else {
                "replaced": self.replaced, "refused": self.refused,
            },
        }  # fmt: skip


def list_keys(client: S3Client, bucket: str) -> set[str]:
    keys: set[str] = set()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys.update(obj["Key"] for obj in page.get("Contents", []))
    except (BotoCoreError, ClientError) as exc:
        raise ReconcileError(f"cannot list bucket {bucket}: {exc}") from exc
    return keys


def read_manifest(client: S3Client, bucket: str, key: str) -> Manifest:
    """The manifest at `key`; ManifestUnreadableError, or ContractError saying why it is invalid."""
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_MANIFEST_BYTES + 1)
    except (BotoCoreError, ClientError) as exc:
        raise ManifestUnreadableError(str(exc)) from exc
    return parse_manifest(body)


def manifest_row(manifest: Manifest, manifest_key: str, present: set[str]) -> ClipRow:
    clip_key = manifest.objects["clip"]
    covered = manifest.covered
    return ClipRow(
        request_id=manifest.request_id,
        camera_id=manifest.camera.id,
        district=manifest.district,
        agent_id=manifest.agent_id,
        status="succeeded",
        object_key=clip_key,
        thumbnail_key=manifest.objects.get("thumbnail"),
        manifest_key=manifest_key,
        size_bytes=manifest.clip.size_bytes,
        sha256=manifest.clip.sha256,
        covered_start=None if covered.start is None else covered.start.timestamp(),
        covered_end=None if covered.end is None else covered.end.timestamp(),
        agency=manifest.agency,
        incident=manifest.incident,
        updated_at=manifest.created_at.timestamp(),
        missing_object=clip_key not in present,
        source="manifest",
    )


def reconcile(store: Store, client: S3Client, bucket: str, rebuild: bool = False) -> ReconcileResult:
    """Compare the index with the bucket (module doc); ReconcileError when the bucket cannot be listed."""
    result = ReconcileResult()
    keys = list_keys(client, bucket)
    rows = _read_manifests(client, bucket, keys, result)
    if rebuild:
        _rebuild(store, rows, result)
    else:  # the clips whose `succeeded` the index lacks (never heard of, or stuck before it)
        succeeded = {c.request_id for c in store.clips() if c.status == "succeeded"}
        new = [row for row in rows if row.request_id not in succeeded]
        store.upsert_clips(new)
        result.indexed = [row.request_id for row in new]
    _flag_missing(store, keys, result)
    return result


def _read_manifests(client: S3Client, bucket: str, keys: set[str], result: ReconcileResult) -> list[ClipRow]:
    """One row per request id, from the first readable manifest of it (in key order)."""
    rows: dict[str, ClipRow] = {}
    for key in sorted(k for k in keys if k.endswith(MANIFEST_SUFFIX)):
        result.manifests += 1
        try:
            manifest = read_manifest(client, bucket, key)
        except (ManifestUnreadableError, ContractError) as exc:
            reason = exc.reason if isinstance(exc, ContractError) else "unreadable"
            log.warning("invalid manifest %s: %s", key, str(exc)[:300], extra={"reason": reason})
            result.invalid.append(key)
            result.invalid_reasons[reason] += 1
            continue
        if manifest.request_id in rows:
            log.warning("manifest %s repeats request %s; the first is kept", key, manifest.request_id)
            result.duplicates.append(key)
            continue
        rows[manifest.request_id] = manifest_row(manifest, key, keys)
    return list(rows.values())


def _rebuild(store: Store, rows: list[ClipRow], result: ReconcileResult) -> None:
    """Swap in the index built from the manifests, unless S3 failed to hand over a manifest (a transient
    error must not drop a clip) or nothing could be read while the index has clips."""
    old = store.clips()
    unreadable = result.invalid_reasons["unreadable"]
    if unreadable:
        result.refused = f"{unreadable} manifests could not be fetched; the index was kept"
    elif not rows and old:
        result.refused = (
            f"no readable manifest ({result.manifests} found, {len(result.invalid)} invalid); "
            f"the {len(old)} indexed clips were kept"
        )
    if result.refused:
        log.error("rebuild refused: %s", result.refused)
        return
    result.replaced = store.replace_clips(rows)
    result.indexed = [row.request_id for row in rows]


def _flag_missing(store: Store, keys: set[str], result: ReconcileResult) -> None:
    """A finished clip whose object is absent is missing (reported each run); one that is back is restored."""
    for clip in store.clips():
        if clip.status != "succeeded" or not clip.object_key:
            continue
        if clip.object_key not in keys:
            result.missing.append(clip.request_id)
        elif clip.missing_object:
            result.restored.append(clip.request_id)
    store.set_missing(result.missing, True)
    store.set_missing(result.restored, False)
