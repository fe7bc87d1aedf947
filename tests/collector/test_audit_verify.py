"""`audit verify` against a real Ceph bucket under Object Lock: every kind of tampering is named at its first
bad record, and the checkpoints themselves cannot be deleted, shortened or replaced unseen."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from collector.audit.checkpoints import CheckpointBucket, signed_checkpoint
from collector.audit.verify import Verdict, verify
from collector.cli import main
from collector.index.store import Store
from common.signing import key_id, load_or_create_key
from tests.collector.audit_helpers import (
    config_file,
    fill,
    locked_bucket,
    rewrite_from,
    row,
    tamper,
    update_row,
)
from tests.services import CephS3

pytestmark = pytest.mark.integration
CHECKPOINTED = (6, 10)  # a chain of 10 records with checkpoints of its head at seq 6 and 10


@dataclass
class Trail:
    store: Store
    bucket: CheckpointBucket
    key: Ed25519PrivateKey
    config: Path

    @property
    def trusted(self) -> dict[str, Ed25519PublicKey]:
        public = self.key.public_key()
        return {key_id(public): public}

    def verify(self) -> Verdict:
        return verify(self.store, self.bucket, self.trusted)


@pytest.fixture
def trail(store: Store, store_url: str, ceph_s3: CephS3, tmp_path: Path) -> Trail:
    client, name = locked_bucket(ceph_s3)
    bucket = CheckpointBucket(client, name, "audit/", retention_days=365)
    key = load_or_create_key(tmp_path / "audit-key.pem")
    heads = fill(store, 10)
    for seq in CHECKPOINTED:
        bucket.write(signed_checkpoint(heads[seq - 1], time.time(), key))
    return Trail(store, bucket, key, config_file(ceph_s3, name, store_url, tmp_path))


def test_an_intact_chain_agrees_with_its_checkpoints(trail: Trail) -> None:
    verdict = trail.verify()

    assert verdict.ok, verdict.problems
    assert (verdict.records, verdict.checkpoints, verdict.newest_checkpoint) == (10, 2, 10)
    assert verdict.first_bad is None


def _changed(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    return [("UPDATE audit_log SET purpose = ? WHERE seq = 3", ("routine check",))]


def _garbled(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    return [("UPDATE audit_log SET subjects = ? WHERE seq = 5", ("[{'camera_id': ",))]


def _rehashed(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    return rewrite_from(store, 4, purpose="routine check")[:1]  # its own hash recomputed, not the next link


def _removed(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    return [("DELETE FROM audit_log WHERE seq = 6", ())]


def _reordered(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    third, fourth = ({k: v for k, v in row(store, s).items() if k != "seq"} for s in (3, 4))
    return [update_row(3, fourth), update_row(4, third)]


def _cut(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    return [
        ("DELETE FROM audit_log WHERE seq > 8", ()),
        ("UPDATE audit_head SET seq = 8, hash = ? WHERE id = 1", (row(store, 8)["hash"],)),
    ]


def _rewritten(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    return rewrite_from(store, 7, purpose="routine check")


@pytest.mark.parametrize(
    ("tampering", "first_bad", "why"),
    [
        (_changed, 3, "record changed"),
        (_garbled, 5, "subjects is not JSON"),
        (_rehashed, 4, "record rewritten"),
        (_removed, 6, "record removed"),
        (_reordered, 3, "record changed"),
        (_cut, 9, "tail cut"),
        (_rewritten, 7, "chain rewritten"),
    ],
    ids=["changed", "garbled", "rehashed", "removed", "reordered", "cut-tail", "rewritten"],
)
def test_tampering_is_detected_at_the_first_bad_record(
    trail: Trail, tampering: Callable[[Store], list[tuple[str, tuple[Any, ...]]]], first_bad: int, why: str
) -> None:
    tamper(trail.store, *tampering(trail.store))

    verdict = trail.verify()

    assert not verdict.ok
    assert verdict.first_bad is not None
    assert (verdict.first_bad.seq, why in verdict.first_bad.reason) == (first_bad, True), verdict.problems


def test_the_rewritten_chain_is_consistent_in_itself(trail: Trail) -> None:
    """Without checkpoints a rewrite would pass: only the bucket catches it."""
    tamper(trail.store, *_rewritten(trail.store))

    problems = trail.verify().problems

    assert [p.seq for p in problems] == [7]  # one problem, from the checkpoint of seq 10; none from the chain


def test_a_checkpoint_signed_by_another_key_is_not_trusted(trail: Trail) -> None:
    forged = signed_checkpoint(trail.verify().last, time.time(), Ed25519PrivateKey.generate())
    trail.bucket.write(forged)

    verdict = trail.verify()

    assert not verdict.ok and verdict.checkpoints == 2
    assert verdict.first_bad is None  # the chain is fine; the bucket holds something nobody trusted signed
    assert "unknown key" in verdict.problems[0].reason


def test_the_bucket_refuses_to_delete_shorten_or_replace_a_checkpoint(trail: Trail) -> None:
    client, name = trail.bucket.client, trail.bucket.bucket
    (version,) = client.list_object_versions(Bucket=name, Prefix="audit/checkpoints/000000000010")["Versions"]
    key, version_id = version["Key"], version["VersionId"]

    with pytest.raises(ClientError) as deleting:
        client.delete_object(Bucket=name, Key=key, VersionId=version_id)
    assert deleting.value.response["Error"]["Code"] == "AccessDenied"
    sooner = datetime.now(UTC) + timedelta(days=1)
    for mode in ("COMPLIANCE", "GOVERNANCE"):
        with pytest.raises(ClientError):
            client.put_object_retention(
                Bucket=name,
                Key=key,
                VersionId=version_id,
                Retention={"Mode": mode, "RetainUntilDate": sooner},
            )
    # What remains possible, a new version over the key and a delete marker, hides nothing from verify.
    client.put_object(Bucket=name, Key=key, Body=b'{"v": 1, "seq": 8, "hash": "00", "at": 0}')
    client.delete_object(Bucket=name, Key=key)
    tamper(trail.store, *_cut(trail.store))

    verdict = trail.verify()

    retention = client.get_object_retention(Bucket=name, Key=key, VersionId=version_id)["Retention"]
    assert retention["Mode"] == "COMPLIANCE" and retention["RetainUntilDate"] > sooner
    assert verdict.checkpoints == 2 and verdict.first_bad is not None and verdict.first_bad.seq == 9
    assert any("not a checkpoint" in p.reason for p in verdict.problems)


def test_verify_command_exit_codes_and_json(
    trail: Trail, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ["--config", str(trail.config)]
    assert main(["audit", "verify", "--json", *config]) == 0
    assert json.loads(capsys.readouterr().out) | {"last_hash": ""} == {
        "ok": True, "records": 10, "first_seq": 1, "last_seq": 10, "last_hash": "", "checkpoints": 2,
        "newest_checkpoint_seq": 10, "unanchored_records": 0, "first_bad": None, "problems": [],
        "problem_count": 0,
    }  # fmt: skip

    tamper(trail.store, *_changed(trail.store))
    assert main(["audit", "verify", *config]) == 1
    assert "first bad record: seq 3: record changed" in capsys.readouterr().err

    monkeypatch.setenv("COLLECTOR__AUDIT__PUBLIC_KEYS", f'["{trail.config.parent / "missing.pem"}"]')
    assert main(["audit", "verify", *config]) == 2
    assert "missing.pem" in capsys.readouterr().err

    monkeypatch.setenv("COLLECTOR__AUDIT__BUCKET", "")
    assert main(["audit", "verify", *config]) == 2
    assert "audit.bucket" in capsys.readouterr().err


@pytest.mark.parametrize(("pruned", "ok"), [(6, True), (5, False)], ids=["at-a-checkpoint", "elsewhere"])
def test_records_pruned_after_retention_verify_only_up_to_a_checkpoint(
    trail: Trail, pruned: int, ok: bool
) -> None:
    tamper(trail.store, ("DELETE FROM audit_log WHERE seq <= ?", (pruned,)))

    verdict = trail.verify()

    assert (verdict.ok, verdict.first) == (ok, pruned + 1)
    assert ok or (verdict.first_bad is not None and verdict.first_bad.seq == 1)
