"""botocore settings for S3 gateways such as Ceph's RGW, the same for agent, collector and tests."""

from __future__ import annotations

from typing import Any

from botocore.config import Config


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
