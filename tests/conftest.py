"""Shared fixtures: real services on 127.0.0.1 (see tests/services.py), markers live in pyproject.toml."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError

from tests.services import CephS3, Mosquitto

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh broker per test (~25 ms to start); restart() keeps its retained messages."""
    broker = Mosquitto().start(tmp_path / "mosquitto")
    yield broker
    broker.stop(graceful=False)  # its database is thrown away: skip the ~0.1 s graceful exit


@pytest.fixture(scope="session")
def ceph_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephS3]:
    """One Ceph S3 gateway for the whole session (a few seconds to start; needs root)."""
    with CephS3().start(tmp_path_factory.mktemp("ceph")) as gateway:
        yield gateway


@pytest.fixture
def s3_bucket(ceph_s3: CephS3) -> Iterator[tuple[S3Client, str]]:
    """A new, uniquely named bucket; its objects are deleted afterwards (the OSD keeps data in RAM)."""
    client = ceph_s3.client()
    name = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    yield client, name
    _empty_bucket(client, name)


def _empty_bucket(client: S3Client, bucket: str) -> None:
    """Best effort: objects under retention stay (the cluster is thrown away at the end anyway)."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            with contextlib.suppress(ClientError):
                client.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
