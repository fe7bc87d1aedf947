"""The S3 client, what its errors mean, and the names of the objects a clip becomes.

Layout: `{district}/{camera}/{yyyy}/{mm}/{dd}/{start:%Y%m%dT%H%M%SZ}_{request}.mp4`, with `.jpg` (thumbnail)
and `.manifest.json` (signed manifest) beside it. The date is the requested start in UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from common import s3 as common_s3
from common.s3 import S3Settings

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client


# Socket-level failures that botocore gave up on: the gateway is down or the uplink broke.
NETWORK_ERRORS = (BotoConnectionError, HTTPClientError, OSError)
# The multipart upload vanished (e.g. the gateway lost it): start the object again.
RESTART_CODES = frozenset({"NoSuchUpload"})
# Refusals no retry can cure: a person must fix the credentials, the bucket, its policy or the agent's clock.
# Value: the bounded `reason` of cctv_agent_clip_uploads_blocked. Any other 4xx is "rejected".
BLOCKING_CODES = {
    "AccessDenied": "access_denied",
    "AllAccessDisabled": "access_denied",
    "AccountProblem": "access_denied",
    "InvalidAccessKeyId": "invalid_access_key",
    "SignatureDoesNotMatch": "signature_mismatch",
    "NoSuchBucket": "no_such_bucket",
    "RequestTimeTooSkewed": "clock_skew",
}


class UploadVanishedError(Exception):
    """The multipart upload is gone (NoSuchUpload): the object is sent again from the start."""


class UploadError(Exception):
    """An upload that did not complete. `transient`: retry later. `blocked` (never transient): why S3 refuses
    for a reason a person must fix (a BLOCKING_CODES value, "rejected", "no_credentials" or "client_error").
    `last_exception` is the underlying error."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        last_exception: BaseException | None = None,
        blocked: str | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient and blocked is None
        self.blocked = blocked
        self.last_exception = last_exception


@dataclass(frozen=True)
class ClipKeys:
    clip: str
    thumbnail: str
    manifest: str


def clip_keys(district: str, camera_id: str, start: datetime, request_id: str) -> ClipKeys:
    start = start.astimezone(UTC)
    base = f"{district}/{camera_id}/{start:%Y/%m/%d}/{start:%Y%m%dT%H%M%SZ}_{request_id}"
    return ClipKeys(clip=f"{base}.mp4", thumbnail=f"{base}.jpg", manifest=f"{base}.manifest.json")


def make_client(settings: S3Settings) -> S3Client:
    """The gateway client with this district's retries and timeouts; the uploader retries a whole part above
    botocore's own retries."""
    return common_s3.make_client(settings, max_pool_connections=32)


def s3_call(key: str, call: Callable[[], Any]) -> Any:
    """Run one S3 call, converting botocore's exceptions into UploadError (the one place that does)."""
    try:
        return call()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in RESTART_CODES:
            raise UploadVanishedError from exc
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        transient = status >= 500 or status in (0, 408, 429) or code == "SlowDown"
        blocked = None if transient else BLOCKING_CODES.get(code, "rejected")
        raise UploadError(
            f"{key}: S3 {code or status}", transient=transient, last_exception=exc, blocked=blocked
        ) from exc
    except NETWORK_ERRORS as exc:
        raise UploadError(
            f"{key}: S3 unreachable ({type(exc).__name__})", transient=True, last_exception=exc
        ) from exc
    except NoCredentialsError as exc:
        raise UploadError(
            f"{key}: no S3 credentials", transient=False, last_exception=exc, blocked="no_credentials"
        ) from exc
    except BotoCoreError as exc:  # bad endpoint, bad parameter: a person must act
        raise UploadError(
            f"{key}: S3 client error ({exc})", transient=False, last_exception=exc, blocked="client_error"
        ) from exc
