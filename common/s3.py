"""S3 for agent, collector and tests: one settings model, botocore settings for gateways such as Ceph's RGW,
and the client built from them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, ValidationInfo, field_validator

from common.settings import read_secret_file

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client


class S3Settings(BaseModel):
    """A bucket on any S3 API (Ceph RGW, MinIO, AWS): the `[s3]` section of agent and collector settings."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str = "http://127.0.0.1:7480"
    region: str = "default"
    bucket: str = "cctv-evidence"
    # Both or neither (then boto3's own chain: AWS_* environment, instance profile).
    access_key: str = ""
    # A file holding the secret key (e.g. /run/secrets/s3_secret_key); not together with secret_key.
    secret_key_file: FilePath | None = None
    secret_key: SecretStr = Field(default=SecretStr(""), validate_default=True)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    read_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # botocore's own retries (throttling, 5xx, connection errors) per request, first attempt included.
    max_attempts: int = Field(default=4, ge=1, le=20)

    @field_validator("secret_key")
    @classmethod
    def _paired_with_access_key(cls, secret: SecretStr, info: ValidationInfo) -> SecretStr:
        path = info.data.get("secret_key_file")
        if path is not None:
            if secret.get_secret_value():
                raise ValueError("give secret_key or secret_key_file, not both")
            secret = SecretStr(read_secret_file(path))
        access_key = info.data.get("access_key", "")
        if access_key and not secret.get_secret_value():
            raise ValueError("required when s3.access_key is set")
        if secret.get_secret_value() and not access_key:
            raise ValueError("given without s3.access_key")
        return secret


def gateway_config(*, max_attempts: int = 3, **extra: Any) -> Config:
    """Path-style addressing (RGW, MinIO) and checksums only when an operation requires them: boto3 >= 1.36
    sends trailing checksums by default, which Ceph's gateway rejects over HTTPS. botocore retries
    throttling, 5xx and connection errors itself (`max_attempts`, first one included). `extra`: other
    Config options (timeouts, pool size)."""
    return Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": max_attempts, "mode": "standard"},
        **extra,
    )


def make_client(settings: S3Settings, **extra: Any) -> S3Client:
    """A client for `settings`' gateway with its retries and timeouts; `extra`: other Config options."""
    verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else settings.verify_tls
    config = gateway_config(
        max_attempts=settings.max_attempts,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        **extra,
    )
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key or None,
        aws_secret_access_key=settings.secret_key.get_secret_value() or None,
        verify=verify,
        config=config,
    )
    return client
