"""Reconciling the clip index with the bucket: the bucket is the truth for what exists.

- a `*.manifest.json` object whose request id has no index entry is indexed from the manifest;
- an indexed clip whose object is not in the bucket is flagged `missing_object` (and unflagged when it
  reappears);
- `rebuild=True` empties the clip index first, so it is rebuilt from the bucket alone.

The manifest fields relied on are documented in docs/collector.md (`Manifest` below is the reference).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from collector.config import S3Settings
from collector.store import ClipRow, Store
from contract.messages import DistrictSlug, Ident
from contract.s3_config import gateway_config

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024


class Manifest(BaseModel):
    """The fields of a clip manifest the collector relies on; other fields are allowed and ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = 1
    request_id: Ident
    camera_id: Ident
    district: DistrictSlug
    agent_id: Ident | None = None
    agency: str = Field(default="", max_length=64)
    incident: str = Field(default="", max_length=64)
    covered_start: AwareDatetime
    covered_end: AwareDatetime
    object_key: str = Field(min_length=1, max_length=1024)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    thumbnail_key: str | None = None


@dataclass
class ReconcileResult:
    manifests: int = 0
    indexed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "manifests": self.manifests,
            "indexed": self.indexed,
            "missing_object": self.missing,
            "restored": self.restored,
            "invalid_manifests": self.invalid,
            "removed": self.removed,
        }


def s3_client(settings: S3Settings) -> S3Client:
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=secret,
        config=gateway_config(),
    )
    return client


def list_keys(client: S3Client, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def read_manifest(client: S3Client, bucket: str, key: str) -> Manifest:
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_MANIFEST_BYTES + 1)
    if len(body) > MAX_MANIFEST_BYTES:
        raise ValueError("manifest larger than 1 MiB")
    return Manifest.model_validate(json.loads(body))


def manifest_row(manifest: Manifest, manifest_key: str, present: set[str]) -> ClipRow:
    return ClipRow(
        request_id=manifest.request_id,
        camera_id=manifest.camera_id,
        district=manifest.district,
        agent_id=manifest.agent_id,
        status="succeeded",
        object_key=manifest.object_key,
        thumbnail_key=manifest.thumbnail_key,
        manifest_key=manifest_key,
        size_bytes=manifest.size_bytes,
        sha256=manifest.sha256,
        covered_start=manifest.covered_start.timestamp(),
        covered_end=manifest.covered_end.timestamp(),
        agency=manifest.agency,
        incident=manifest.incident,
        updated_at=manifest.covered_end.timestamp(),
        missing_object=manifest.object_key not in present,
        source="manifest",
    )


def reconcile(store: Store, client: S3Client, bucket: str, rebuild: bool = False) -> ReconcileResult:
    result = ReconcileResult()
    keys = list_keys(client, bucket)
    if rebuild:
        result.removed = store.delete_clips()
    known = {c.request_id for c in store.clips()}
    rows = []
    for key in sorted(k for k in keys if k.endswith(MANIFEST_SUFFIX)):
        result.manifests += 1
        try:
            manifest = read_manifest(client, bucket, key)
        except (ValueError, ValidationError) as exc:
            log.warning("invalid manifest %s: %s", key, str(exc)[:300])
            result.invalid.append(key)
            continue
        if manifest.request_id not in known:
            rows.append(manifest_row(manifest, key, keys))
            known.add(manifest.request_id)
            result.indexed.append(manifest.request_id)
    if rows:
        store.upsert_clips(rows)
    _flag_missing(store, keys, result)
    return result


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
