"""Reconciling the clip index with a real Ceph S3 bucket."""

from __future__ import annotations

import hashlib
import json

import pytest

from collector.reconcile import reconcile
from collector.store import Batch, Store
from tests.collector.conftest import at, clip

pytestmark = pytest.mark.integration


def put_clip(client, bucket: str, request_id: str, manifest: bool = True) -> str:
    body = f"video of {request_id}".encode()
    key = f"gangnam/2026/03/02/{request_id}.mp4"
    client.put_object(Bucket=bucket, Key=key, Body=body)
    if manifest:
        doc = {
            "v": 1,
            "request_id": request_id,
            "camera_id": "cam-1",
            "district": "gangnam",
            "agent_id": "agent-gangnam",
            "agency": "112",
            "incident": "INC-7",
            "covered_start": at(0).isoformat(),
            "covered_end": at(1).isoformat(),
            "object_key": key,
            "sha256": hashlib.sha256(body).hexdigest(),
            "size_bytes": len(body),
            "future_field": "ignored",
        }
        client.put_object(
            Bucket=bucket, Key=key.replace(".mp4", ".manifest.json"), Body=json.dumps(doc).encode()
        )
    return key


def test_reconcile_indexes_manifests_and_flags_missing_objects(s3_bucket, store: Store) -> None:
    client, bucket = s3_bucket
    key_a = put_clip(client, bucket, "req-a")  # in the bucket only
    key_b = put_clip(client, bucket, "req-b", manifest=False)
    batch = Batch()
    batch.add(clip("req-b", "succeeded", 1, object_key=key_b))  # indexed and present
    batch.add(clip("req-c", "succeeded", 1, object_key="gangnam/gone.mp4"))  # indexed, object lost
    store.apply(batch)
    client.put_object(Bucket=bucket, Key="gangnam/broken.manifest.json", Body=b"{}")

    result = reconcile(store, client, bucket)

    assert result.indexed == ["req-a"] and result.missing == ["req-c"]
    assert result.invalid == ["gangnam/broken.manifest.json"]
    rows = {c.request_id: c for c in store.clips()}
    a = rows["req-a"]
    assert (a.source, a.status, a.object_key, a.agency, a.incident) == (
        "manifest",
        "succeeded",
        key_a,
        "112",
        "INC-7",
    )
    assert a.covered_start == at(0).timestamp() and a.size_bytes == len(b"video of req-a")
    assert rows["req-c"].missing_object and not rows["req-b"].missing_object

    client.put_object(Bucket=bucket, Key="gangnam/gone.mp4", Body=b"restored")
    again = reconcile(store, client, bucket)
    assert again.indexed == [] and again.restored == ["req-c"] and again.missing == []


def test_rebuild_restores_the_clip_index_from_the_bucket_alone(s3_bucket, store: Store) -> None:
    client, bucket = s3_bucket
    put_clip(client, bucket, "req-1")
    put_clip(client, bucket, "req-2")
    batch = Batch()
    batch.add(clip("req-stale", "succeeded", 1, object_key="nowhere.mp4"))
    store.apply(batch)
    result = reconcile(store, client, bucket, rebuild=True)
    assert result.removed == 1
    assert [c.request_id for c in store.clips()] == ["req-1", "req-2"]
