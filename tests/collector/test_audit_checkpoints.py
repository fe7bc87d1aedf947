"""The checkpointer: signed checkpoints of the moving head in a compliance-locked Ceph bucket; its metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from collector.audit.checkpoints import Checkpointer, CheckpointError, open_bucket, trusted_keys
from collector.audit.verify import verify
from collector.cli import main
from collector.config import CollectorSettings
from collector.index.store import Store
from common.settings import load
from tests.collector.audit_helpers import config_file, fill, locked_bucket, tamper
from tests.collector.conftest import wait_until
from tests.services import CephS3


def checkpointed_seqs(settings: CollectorSettings) -> list[int]:
    stored = open_bucket(settings).read_all(trusted_keys(settings.audit))
    return [s.checkpoint.seq for s in stored if s.checkpoint is not None]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


@pytest.fixture
def started() -> Iterator[list[Checkpointer]]:
    running: list[Checkpointer] = []
    yield running
    for checkpointer in running:
        checkpointer.stop()


@pytest.mark.integration
def test_checkpoints_follow_the_head_within_the_interval(
    store: Store, store_url: str, ceph_s3: CephS3, tmp_path: Path, started: list[Checkpointer]
) -> None:
    _, bucket = locked_bucket(ceph_s3)
    settings = load(CollectorSettings, config_file(ceph_s3, bucket, store_url, tmp_path, interval_s=0.2))
    registry = CollectorRegistry()
    checkpointer = Checkpointer.from_settings(settings, registry)
    fill(store, 3)
    checkpointer.start()
    started.append(checkpointer)

    wait_until(lambda: 3 in checkpointed_seqs(settings), 5, "a checkpoint of seq 3")
    fill(store, 2)
    wait_until(lambda: 5 in checkpointed_seqs(settings), 5, "a checkpoint of seq 5")

    assert checkpointer.checkpoint_now() is None  # the head has not moved: nothing new to sign
    seqs = checkpointed_seqs(settings)  # seq 4 too when a tick fell between the two appends
    assert seqs[0] == 3 and seqs[-1] == 5 and seqs == sorted(set(seqs)), seqs
    assert verify(store, open_bucket(settings), trusted_keys(settings.audit)).ok
    assert sample(registry, "cctv_collector_audit_checkpoint_seq") == 5
    assert sample(registry, "cctv_collector_audit_checkpoint_age_seconds") < 5
    assert sample(registry, "cctv_collector_audit_checkpoint_failures_total", reason="s3") == 0
    assert sample(registry, "cctv_collector_audit_chain_ok") == 1


@pytest.mark.integration
def test_a_changed_record_is_never_anchored_and_the_chain_shows_broken(
    store: Store, store_url: str, ceph_s3: CephS3, tmp_path: Path
) -> None:
    _, bucket = locked_bucket(ceph_s3)
    settings = load(CollectorSettings, config_file(ceph_s3, bucket, store_url, tmp_path))
    registry = CollectorRegistry()
    checkpointer = Checkpointer.from_settings(settings, registry)
    assert math.isnan(sample(registry, "cctv_collector_audit_chain_ok"))  # not checked yet: no false alarm
    fill(store, 3)
    assert checkpointer.checkpoint_now() is not None
    assert sample(registry, "cctv_collector_audit_chain_ok") == 1
    fill(store, 2)
    tamper(store, ("UPDATE audit_log SET purpose = ? WHERE seq = 4", ("routine check",)))

    with pytest.raises(CheckpointError, match="seq 4: record changed"):
        checkpointer.checkpoint_now()

    assert checkpointed_seqs(settings) == [3]  # the tampered head was not signed
    assert sample(registry, "cctv_collector_audit_chain_ok") == 0


@pytest.mark.integration
def test_a_checkpoint_is_retained_in_compliance_mode_for_the_audit_retention(
    store: Store, store_url: str, ceph_s3: CephS3, tmp_path: Path
) -> None:
    client, bucket = locked_bucket(ceph_s3)
    settings = load(CollectorSettings, config_file(ceph_s3, bucket, store_url, tmp_path))
    checkpointer = Checkpointer.from_settings(settings, CollectorRegistry())
    fill(store, 1)

    checkpoint = checkpointer.checkpoint_now()

    assert checkpoint is not None and checkpoint.seq == 1
    (version,) = client.list_object_versions(Bucket=bucket)["Versions"]
    assert version["Key"].startswith("audit/checkpoints/000000000001-")
    retention = client.get_object_retention(Bucket=bucket, Key=version["Key"])["Retention"]
    days = (retention["RetainUntilDate"].timestamp() - time.time()) / 86400
    assert retention["Mode"] == "COMPLIANCE" and 364.9 < days <= 365


@pytest.mark.integration
def test_a_bucket_without_object_lock_gets_no_checkpoint_and_the_failure_is_counted(
    store: Store, store_url: str, ceph_s3: CephS3, tmp_path: Path, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    settings = load(CollectorSettings, config_file(ceph_s3, bucket, store_url, tmp_path, interval_s=0.2))
    registry = CollectorRegistry()
    checkpointer = Checkpointer.from_settings(settings, registry)
    fill(store, 1)
    with pytest.raises(CheckpointError, match="Object Lock"):
        checkpointer.checkpoint_now()

    checkpointer.start()
    try:
        failures = ("cctv_collector_audit_checkpoint_failures_total", {"reason": "no_object_lock"})
        wait_until(lambda: (registry.get_sample_value(*failures) or 0) >= 2, 5, "two counted failures")
    finally:
        checkpointer.stop()
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)


def test_audit_retention_below_one_year_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[audit]\nbucket = "audit"\nretention_days = 300\n')

    assert main(["validate-config", str(path)]) == 2
    assert "audit.retention_days: Input should be greater than or equal to 365" in capsys.readouterr().err
    assert CollectorSettings().audit.retention_days == 730
