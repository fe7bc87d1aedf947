"""Evidence manifests: what a clip is, who asked for it and why, signed with the agent's Ed25519 key.

The fields are the contract's (contract/manifest.py, shared with the collector); keys, canonical form and the
signature's shape are common/signing.py's. The signature covers the canonical JSON of the manifest model's
dump without its ``signature`` field.
The camera's network address never goes in: addresses and credentials stay in the district.

``cctv-agent verify-clip --clip F --manifest M --public-key K [--thumbnail T] [--json]`` checks a clip
against its manifest: exit 0 valid, 1 invalid, 2 usage error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from common.signing import key_id, sign, signed_body
from contract.errors import ContractError
from contract.manifest import MANIFEST_VERSION, Digest, Manifest, Recording, first_error, parse_manifest

log = logging.getLogger(__name__)

ALG: Literal["ed25519"] = "ed25519"
EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
_TEXT_MAX = 500  # contract.messages.Text: a camera may send a longer manufacturer or model
_CHUNK = 1 << 20


def file_digest(data: bytes | Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of bytes or of a file, read in chunks."""
    if isinstance(data, bytes | bytearray):
        return hashlib.sha256(data).hexdigest(), len(data)
    digest, size = hashlib.sha256(), 0
    with Path(data).open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def build_manifest(
    *,
    camera: Mapping[str, str],
    district: str,
    request_id: str,
    agency: str,
    incident: str,
    purpose: str,
    requested: tuple[datetime, datetime],
    covered: tuple[datetime | None, datetime | None],
    wallclock_source: str,
    clock_offset_s: float | None,
    wallclock_uncertainty_s: float | None = None,
    agent_id: str,
    software_version: str,
    objects: Mapping[str, str],
    clip: tuple[str, int],
    thumbnail: tuple[str, int] | None,
    complete: bool,
    created_at: datetime | None = None,
    source: str | None = None,
    recording: Recording | None = None,
    gaps: Sequence[tuple[datetime, datetime]] = (),
) -> Manifest:
    """An unsigned manifest. ``camera``: id, manufacturer, model, firmware (other keys are dropped, so an
    address can't slip in; text as the camera sent it is cut to the contract's length, as in its meta);
    ``objects``: S3 keys by role; ``clip``/``thumbnail``: (sha256, size).

    ``covered.complete``: the covered window contains the requested one; ``covered.time_source``: rtcp (the
    camera's clock, which agrees with ours), rtcp_corrected (the camera's clock minus the ONVIF offset) or
    local (our receive time); ``covered.uncertainty_s``: how far the covered times can be from our clock
    (null: unknown). See agent/clips/stream.py. ``source``: live, preroll or recording; ``recording``: which
    recording on which device, and its time base; ``gaps``: what a recorded clip misses inside its window."""
    return Manifest.model_validate(
        {
            "v": MANIFEST_VERSION,
            "camera": {k: camera.get(k, "")[:_TEXT_MAX] for k in ("id", "manufacturer", "model", "firmware")},
            "district": district,
            "request_id": request_id,
            "agency": agency,
            "incident": incident,
            "purpose": purpose,
            "requested": {"start": requested[0], "end": requested[1]},
            "covered": {
                "start": covered[0],
                "end": covered[1],
                "complete": complete,
                "time_source": wallclock_source,
                "uncertainty_s": wallclock_uncertainty_s,
                "gaps": [{"start": a, "end": b} for a, b in gaps] or None,
            },
            "clock_offset_s": None if clock_offset_s is None else round(clock_offset_s, 3),
            "agent_id": agent_id,
            "software_version": software_version,
            "objects": dict(objects),
            "clip": {"sha256": clip[0], "size_bytes": clip[1]},
            "thumbnail": None if thumbnail is None else {"sha256": thumbnail[0], "size_bytes": thumbnail[1]},
            "created_at": created_at or datetime.now(UTC),
            "source": source,
            "recording": recording,
        }
    )


def manifest_json(manifest: Manifest) -> bytes:
    """The stored form of a manifest (sorted keys, indented), as uploaded next to its clip."""
    return json.dumps(manifest.model_dump(mode="json"), sort_keys=True, indent=1, ensure_ascii=False).encode()


def sign_manifest(manifest: Manifest, key: Ed25519PrivateKey) -> Manifest:
    """A copy of ``manifest`` with its ``signature`` (any old one is replaced)."""
    return manifest.model_copy(update={"signature": sign(signed_body(manifest), key)})


def verify(
    clip: bytes | Path,
    manifest: Mapping[str, Any] | Manifest,
    public_key_pem: bytes,
    *,
    thumbnail: bytes | Path | None = None,
) -> list[str]:
    """Problems found (empty: the manifest is valid, signed by this key, and the clip/thumbnail match it)."""
    try:
        parsed = manifest if isinstance(manifest, Manifest) else Manifest.model_validate(manifest)
    except ValidationError as exc:
        return [f"manifest does not match the schema: {first_error(exc)}"]
    problems = _signature_problems(parsed, public_key_pem)
    problems += _content_problems("clip", clip, parsed.clip)
    if thumbnail is not None:
        problems += _content_problems("thumbnail", thumbnail, parsed.thumbnail)
    return problems


def _signature_problems(manifest: Manifest, public_key_pem: bytes) -> list[str]:
    signature = manifest.signature
    if signature is None:
        return ["signature missing"]
    public_key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(public_key, Ed25519PublicKey):
        return ["public key is not an Ed25519 key"]
    problems = []
    if signature.key_id != key_id(public_key):
        problems.append(f"key id mismatch: signed by {signature.key_id}, checked with {key_id(public_key)}")
    try:
        public_key.verify(base64.b64decode(signature.value, validate=True), signed_body(manifest))
    except (InvalidSignature, ValueError):
        problems.append("signature invalid")
    return problems


def _content_problems(role: str, data: bytes | Path, expected: Digest | None) -> list[str]:
    if expected is None:
        return [f"manifest has no {role} digest"]
    try:
        sha256, size = file_digest(data)
    except OSError as exc:
        return [f"{role} unreadable: {exc.strerror}"]
    problems = []
    if sha256 != expected.sha256:
        problems.append(f"{role} sha256 mismatch")
    if size != expected.size_bytes:
        problems.append(f"{role} size mismatch: {size} bytes, manifest says {expected.size_bytes}")
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctv-agent verify-clip", description="Check an evidence clip against its signed manifest."
    )
    parser.add_argument("--clip", type=Path, required=True, help="the MP4 clip")
    parser.add_argument("--manifest", type=Path, required=True, help="its manifest (JSON)")
    parser.add_argument("--public-key", type=Path, required=True, help="the agent's Ed25519 public key (PEM)")
    parser.add_argument("--thumbnail", type=Path, help="also check the thumbnail JPEG")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    return parser


def verify_main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 valid, 1 invalid, 2 usage error (bad arguments, missing files, unusable key)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_VALID if exc.code == 0 else EXIT_USAGE  # --help exits 0
    missing = [
        str(p) for p in (args.clip, args.manifest, args.public_key, args.thumbnail) if p and not p.is_file()
    ]
    if missing:
        print(f"verify-clip: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        key_pem = args.public_key.read_bytes()
        serialization.load_pem_public_key(key_pem)
    except ValueError as exc:
        print(f"verify-clip: {args.public_key}: not a PEM public key ({exc})", file=sys.stderr)
        return EXIT_USAGE
    try:
        manifest = parse_manifest(args.manifest.read_bytes())
    except ContractError as exc:
        _print_outcome(args, None, [f"manifest unreadable: {exc}"])
        return EXIT_INVALID
    problems = verify(args.clip, manifest, key_pem, thumbnail=args.thumbnail)
    _print_outcome(args, manifest, problems)
    return EXIT_INVALID if problems else EXIT_VALID


def _print_outcome(args: argparse.Namespace, manifest: Manifest | None, problems: list[str]) -> None:
    if args.json:
        outcome = {"valid": not problems, "problems": problems, "clip": str(args.clip),
                   "key_id": manifest.signature.key_id if manifest and manifest.signature else None,
                   "camera": manifest.camera.model_dump() if manifest else None,
                   "covered": manifest.covered.model_dump(mode="json") if manifest else None}  # fmt: skip
        print(json.dumps(outcome, ensure_ascii=False))
    elif problems or manifest is None:
        print(f"{args.clip}: INVALID", *(f"  - {p}" for p in problems), sep="\n")
    else:
        covered = manifest.covered
        print(f"{args.clip}: valid ({covered.start} .. {covered.end})")
