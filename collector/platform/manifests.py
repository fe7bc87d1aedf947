"""The clip bucket as the API uses it: checking a delivered clip's manifest, and short-lived playback URLs.

A manifest is trusted when the district agent's key (`platform.agent_keys_dir/<district>.pem`) signed it
and it says what the index says: the same request, camera, district, size and SHA-256. A verdict about a
manifest key never changes (the bucket is write-once), so it is kept in memory after the first check;
a read that failed (the gateway down) is not kept, and the next request tries again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from collector.index.incidents import ClipState
from common.signing import key_id, load_public_key, signature_problem, signed_body
from contract.errors import ContractError
from contract.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)
CACHE_MAX = 100_000


@dataclass(frozen=True)
class Verdict:
    """`verified`: signed by the district's key and matching the index; otherwise `problem` says why not.
    `verified` None: not checked (no manifest yet, or the bucket could not be read)."""

    verified: bool | None
    problem: str | None = None


class ClipObjects:
    def __init__(self, client: S3Client, bucket: str, agent_keys_dir: Path | None) -> None:
        self._client, self._bucket, self._keys_dir = client, bucket, agent_keys_dir
        self._verdicts: dict[str, Verdict] = {}
        self._lock = threading.Lock()

    def presign(self, key: str, expires_s: int) -> str:
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_s
        )

    def delete(self, keys: list[str]) -> None:
        """Delete objects (live segments past their retention); a key already gone is no error. BotoCoreError
        or ClientError when the gateway refuses: the caller keeps its rows and tries again."""
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = {"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            errors = self._client.delete_objects(Bucket=self._bucket, Delete=chunk).get("Errors")  # type: ignore[arg-type]
            if errors:
                code, message = errors[0].get("Code", ""), errors[0].get("Message", "")
                raise ClientError({"Error": {"Code": code, "Message": message}}, "DeleteObjects")

    def verify(self, clip: ClipState) -> Verdict:
        key = clip.manifest_key
        if key is None:
            return Verdict(None, "no manifest yet")
        with self._lock:
            known = self._verdicts.get(key)
        if known is not None:
            return known
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read(MAX_MANIFEST_BYTES + 1)
        except (BotoCoreError, ClientError) as exc:
            log.warning("manifest %s unreadable: %s", key, exc)
            return Verdict(None, "manifest unreadable now")
        verdict = self._judge(body, clip)
        with self._lock:
            if len(self._verdicts) >= CACHE_MAX:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def _judge(self, body: bytes, clip: ClipState) -> Verdict:
        try:
            manifest = parse_manifest(body)
        except ContractError as exc:
            return Verdict(False, f"manifest invalid: {exc}")
        problem = self._signature_problem(manifest, clip.request.district) or _mismatch(manifest, clip)
        return Verdict(problem is None, problem)

    def _signature_problem(self, manifest: Manifest, district: str) -> str | None:
        if self._keys_dir is None:
            return "no agent keys configured (platform.agent_keys_dir)"
        try:
            public = load_public_key((self._keys_dir / f"{district}.pem").read_bytes())
        except (OSError, ValueError) as exc:
            return f"no usable key for district {district}: {type(exc).__name__}"
        return signature_problem(signed_body(manifest), manifest.signature, {key_id(public): public})


def _mismatch(m: Manifest, clip: ClipState) -> str | None:
    """The first way the manifest disagrees with the index's record of the clip, if any."""
    req = clip.request
    for what, theirs, ours in (
        ("request id", m.request_id, req.request_id),
        ("camera", m.camera.id, req.camera_id),
        ("district", m.district, req.district),
        ("sha256", m.clip.sha256, clip.sha256),
        ("size", m.clip.size_bytes, clip.size_bytes),
    ):
        if theirs != ours:
            return f"{what} differs: manifest {theirs!r}, index {ours!r}"
    return None
