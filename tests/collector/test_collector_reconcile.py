"""Reconciling the clip index with a real Ceph S3 bucket, holding clips and manifests that the agent's own
delivery code wrote (tests/contract/golden_manifest/delivery.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from agent.clips.upload import Uploader, UploadScheduler
from collector.cli import main
from collector.index.reconcile import reconcile
from collector.index.store import Batch, Store
from contract.messages import ClipUpdate
from tests.collector.conftest import clip
from tests.contract.golden_manifest.delivery import deliver_recorded_clip, recorded_request
from tests.services import CephS3

pytestmark = pytest.mark.integration


async def deliver(tmp_path: Path, s3_bucket: tuple[Any, str], request_id: str) -> dict[str, Any]:
    """The agent delivers the recorded clip to the bucket as `request_id`; the `succeeded` it reported."""
    client, bucket = s3_bucket
    request = recorded_request(request_id)
    uploader = Uploader(client, UploadScheduler(2, 0), 8 * 2**20)
    return await deliver_recorded_clip(tmp_path / request_id, uploader, bucket, request)


def indexed(store: Store, *updates: ClipUpdate) -> None:
    batch = Batch()
    for update in updates:
        batch.add(update)
    store.apply(batch)


async def test_reconcile_indexes_manifests_and_flags_missing_objects(
    tmp_path: Path, s3_bucket: tuple[Any, str], store: Store
) -> None:
    client, bucket = s3_bucket
    a = await deliver(tmp_path, s3_bucket, "req-a")  # in the bucket only: the collector missed its update
    b = await deliver(tmp_path, s3_bucket, "req-b")
    indexed(store, clip("req-b", "succeeded", 1, object_key=b["object_key"]))  # indexed and present
    indexed(store, clip("req-c", "succeeded", 1, object_key="gangnam/gone.mp4"))  # indexed, object lost
    d = await deliver(tmp_path, s3_bucket, "req-d")
    indexed(store, clip("req-d", "uploading", 1))  # its `succeeded` never reached the collector
    client.put_object(Bucket=bucket, Key="gangnam/broken.manifest.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key="gangnam/garbled.manifest.json", Body=b"[" * 100_000)

    result = reconcile(store, client, bucket)

    assert result.indexed == ["req-a", "req-d"] and result.missing == ["req-c"]
    assert result.invalid == ["gangnam/broken.manifest.json", "gangnam/garbled.manifest.json"]
    assert dict(result.invalid_reasons) == {"unknown_version": 1, "invalid_json": 1}
    row = {c.request_id: c for c in store.clips()}["req-a"]
    assert (row.source, row.status, row.agency, row.incident) == (
        "manifest", "succeeded", "police-112", "112-20261205-0001",
    )  # fmt: skip
    assert (row.object_key, row.thumbnail_key, row.manifest_key) == (
        a["object_key"], a["thumbnail_key"], a["manifest_key"],
    )  # fmt: skip
    assert (row.sha256, row.size_bytes) == (a["sha256"], a["size_bytes"])
    assert row.covered_start == a["covered_start"].timestamp()
    assert row.covered_end == a["covered_end"].timestamp()
    rows = {c.request_id: c for c in store.clips()}
    assert rows["req-c"].missing_object and not rows["req-b"].missing_object
    assert (rows["req-d"].status, rows["req-d"].sha256, rows["req-d"].source) == (
        "succeeded",
        d["sha256"],
        "manifest",
    )
    assert rows["req-b"].source == "mqtt"  # known as succeeded: left as the agent reported it

    client.put_object(Bucket=bucket, Key="gangnam/gone.mp4", Body=b"restored")
    again = reconcile(store, client, bucket)
    assert again.indexed == [] and again.restored == ["req-c"] and again.missing == []


async def test_rebuild_swaps_in_the_index_of_the_bucket(
    tmp_path: Path, s3_bucket: tuple[Any, str], store: Store
) -> None:
    client, bucket = s3_bucket
    await deliver(tmp_path, s3_bucket, "req-1")
    await deliver(tmp_path, s3_bucket, "req-2")
    indexed(store, clip("req-stale", "succeeded", 1, object_key="nowhere.mp4"))
    result = reconcile(store, client, bucket, rebuild=True)
    assert (result.replaced, result.indexed, result.refused) == (1, ["req-1", "req-2"], None)
    assert [c.request_id for c in store.clips()] == ["req-1", "req-2"]


def test_rebuild_refuses_when_no_manifest_can_be_read(s3_bucket: tuple[Any, str], store: Store) -> None:
    client, bucket = s3_bucket
    indexed(store, clip("req-1", "succeeded", 1, object_key="k1"), clip("req-2", "failed", 1, reason="x"))
    before = store.clips()
    client.put_object(Bucket=bucket, Key="gangnam/broken.manifest.json", Body=b'{"v": 1}')
    result = reconcile(store, client, bucket, rebuild=True)
    assert result.refused is not None and result.replaced is None and not result.clean
    assert [(c.request_id, c.status) for c in store.clips()] == [(c.request_id, c.status) for c in before]


class FailingGet:
    """The real client, except that fetching one key fails as S3 fails a request under load (a 500)."""

    def __init__(self, client: Any, key: str) -> None:
        self._client, self._key = client, key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"] == self._key:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "try again"}}, "GetObject")
        return self._client.get_object(**kwargs)


async def test_rebuild_refuses_when_a_manifest_cannot_be_fetched(
    tmp_path: Path, s3_bucket: tuple[Any, str], store: Store
) -> None:
    client, bucket = s3_bucket
    await deliver(tmp_path, s3_bucket, "req-1")
    second = await deliver(tmp_path, s3_bucket, "req-2")
    assert reconcile(store, client, bucket).indexed == ["req-1", "req-2"]
    before = store.clips()
    result = reconcile(store, FailingGet(client, second["manifest_key"]), bucket, rebuild=True)
    assert result.refused is not None and dict(result.invalid_reasons) == {"unreadable": 1}
    assert store.clips() == before


async def test_reconcile_cli_reports_counts_as_json_and_exit_codes(
    tmp_path: Path,
    s3_bucket: tuple[Any, str],
    ceph_s3: CephS3,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, bucket = s3_bucket
    await deliver(tmp_path, s3_bucket, "req-1")
    monkeypatch.setenv("COLLECTOR__STORE__URL", f"sqlite://{tmp_path / 'index.db'}")
    assert main(["reconcile", "--json"]) == 2  # no bucket configured
    assert "s3.bucket" in capsys.readouterr().err
    s3 = {"endpoint_url": ceph_s3.endpoint, "bucket": bucket, "region": ceph_s3.region,
          "access_key": ceph_s3.access_key, "secret_key": ceph_s3.secret_key}  # fmt: skip
    for name, value in s3.items():
        monkeypatch.setenv(f"COLLECTOR__S3__{name.upper()}", value)

    assert main(["reconcile", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"manifests": 1, "indexed": 1, "invalid_manifests": 0,
                                "duplicate_manifests": 0, "missing_object": 0, "restored": 0}  # fmt: skip
    assert report["indexed"] == ["req-1"]

    client.put_object(Bucket=bucket, Key="gangnam/broken.manifest.json", Body=b"not json")
    assert main(["reconcile", "--rebuild", "--json"]) == 1  # rebuilt, but a manifest could not be read
    report = json.loads(capsys.readouterr().out)
    assert report["rebuild"] == {"replaced": 1, "refused": None} and report["indexed"] == ["req-1"]
    assert report["invalid_manifests"] == ["gangnam/broken.manifest.json"]
    assert report["invalid_reasons"] == {"invalid_json": 1}

    monkeypatch.setenv("COLLECTOR__S3__BUCKET", "no-such-bucket-here")
    assert main(["reconcile", "--json"]) == 1
    assert "index is unchanged" in capsys.readouterr().err
