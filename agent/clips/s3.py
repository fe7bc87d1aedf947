"""The S3 client and the names of the objects a clip becomes.

Layout: `{district}/{camera}/{yyyy}/{mm}/{dd}/{start:%Y%m%dT%H%M%SZ}_{request}.mp4`, with `.jpg` (thumbnail)
and `.manifest.json` (signed manifest) beside it. The date is the requested start in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from agent.clips.settings import S3Settings
from contract.s3_config import gateway_config

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client


@dataclass(frozen=True)
class ClipKeys:
    clip: str
    thumbnail: str
    manifest: str


def clip_keys(district: str, camera_id: str, start: datetime, request_id: str) -> ClipKeys:
    start = start.astimezone(UTC)
    base = f"{district}/{camera_id}/{start:%Y/%m/%d}/{start:%Y%m%dT%H%M%SZ}_{request_id}"
    return ClipKeys(clip=f"{base}.mp4", thumbnail=f"{base}.jpg", manifest=f"{base}.manifest.json")


def client_config(settings: S3Settings) -> Config:
    """The shared gateway settings with this district's retries and timeouts; the uploader retries a whole
    part above botocore's own retries."""
    return gateway_config(
        max_attempts=settings.max_attempts,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        max_pool_connections=32,
    )


def make_client(settings: S3Settings) -> S3Client:
    verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else settings.verify_tls
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key or None,
        aws_secret_access_key=settings.secret_key.get_secret_value() or None,
        verify=verify,
        config=client_config(settings),
    )
