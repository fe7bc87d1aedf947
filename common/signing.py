"""Ed25519 signing shared by the agent (evidence manifests) and the collector (commands, audit checkpoints).

Canonical form: JSON with sorted keys, no spaces, UTF-8. A signature is stored as
``{"alg": "ed25519", "key_id": <first 16 hex of SHA-256 of the raw public key>, "value": <base64>}``
(contract.signature.Signature). Keys are PEM files: PKCS#8 private keys, SubjectPublicKeyInfo public keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from contract.signature import ALG, Signature

log = logging.getLogger(__name__)


def canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_body(document: BaseModel) -> bytes:
    """What a signature on a model covers: the canonical JSON of its dump without its `signature` field."""
    return canonical_json(document.model_dump(mode="json", exclude={"signature"}))


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """A signing key from a PEM file; created (mode 0600, directory 0700) if it does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:  # O_EXCL: two processes starting at once must not overwrite each other's key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(path)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        log.info("created signing key %s (key id %s)", path, key_id(key.public_key()))
        return key
    if path.stat().st_mode & 0o077:
        log.warning("signing key %s is readable by others; chmod 600 it", path)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return loaded


def public_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ValueError for anything else."""
    loaded = serialization.load_pem_public_key(pem)
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return loaded


def sign(body: bytes, key: Ed25519PrivateKey) -> Signature:
    value = base64.b64encode(key.sign(body)).decode()
    return Signature(alg=ALG, key_id=key_id(key.public_key()), value=value)


def signature_problem(
    body: bytes, signature: Signature | None, trusted: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """Why `signature` does not prove that one of the `trusted` keys (by key id) signed `body`; None if so."""
    if signature is None:
        return "signature missing"
    public_key = trusted.get(signature.key_id)
    if public_key is None:
        return f"signed by unknown key {signature.key_id}"
    try:
        public_key.verify(base64.b64decode(signature.value, validate=True), body)
    except (InvalidSignature, ValueError):
        return "signature invalid"
    return None
