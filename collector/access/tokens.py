"""Bearer tokens: JWTs verified with PyJWT against a JWKS (file or URL), one asymmetric algorithm.

Any OIDC identity provider an agency runs fits: it publishes a JWKS and signs tokens carrying `sub` (the
account), `agency` and `role`. `issue_token` mints such tokens from a local Ed25519 key, for development and
the demo only (`cctv-collector token issue`).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from collector.access.settings import AccessSettings
from common.signing import key_id, load_or_create_key

MAX_TOKEN_BYTES = 8192
MAX_VERIFIED = 10_000  # verified tokens remembered at once (an operator's token is one entry)
_REQUIRED = ["iss", "aud", "exp", "sub"]


@dataclass(frozen=True)
class Principal:
    account: str
    agency: str
    role: str


class AuthError(Exception):
    """The request is not authenticated. Codes: token_missing, token_invalid, token_expired, token_issuer,
    token_audience, token_claims (all 401) and keys_unavailable (the JWKS URL cannot be read: 503)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return 503 if self.code == "keys_unavailable" else 401


class _Keys(Protocol):
    blocking: bool  # find() may wait on the network

    def find(self, kid: str | None) -> jwt.PyJWK | None: ...


class _FileKeys:
    blocking = False

    def __init__(self, path: Path) -> None:
        self._keys = list(read_jwks(path))

    def find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:  # without a key id, only an unambiguous single key will do
            return self._keys[0] if len(self._keys) == 1 else None
        return next((k for k in self._keys if k.key_id == kid), None)


class _UrlKeys:
    blocking = True

    def __init__(self, s: AccessSettings, url: str) -> None:
        self._client = jwt.PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=s.jwks_cache_s,
            timeout=s.jwks_timeout_s,
            cooldown_duration=s.jwks_refetch_s,
        )

    def find(self, kid: str | None) -> jwt.PyJWK | None:
        try:  # an unknown kid refetches the set (a rotated key), at most once per jwks_refetch_s
            return self._client.get_signing_key(kid) if kid else None
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthError("keys_unavailable", f"cannot read the JWKS: {exc}") from None
        except jwt.PyJWKClientError:
            return None


class _NoKeys:
    blocking = False

    def find(self, kid: str | None) -> jwt.PyJWK | None:
        return None


def read_jwks(path: Path) -> jwt.PyJWKSet:
    """The key set in a JWKS file; ValueError naming the problem."""
    try:
        return jwt.PyJWKSet.from_json(Path(path).read_text())
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ValueError(f"cannot read JWKS {path}: {exc}") from None


class _Verified:
    """Tokens verified already, by their exact string, each until it expires (exp + leeway, when PyJWT would
    refuse it) and at most `jwks_cache_s` (as long as keys fetched from a jwks_url are trusted unchanged): an
    operator sends one token with every request, and checking its signature is most of a request's cost.
    Only successes are kept; a refused token is judged afresh each time."""

    def __init__(self, max_entries: int = MAX_VERIFIED) -> None:
        self._until: dict[str, tuple[float, Principal]] = {}
        self._max = max_entries
        self._lock = threading.Lock()  # verify runs on the event loop or, with a jwks_url, in workers

    def get(self, token: str, now: float) -> Principal | None:
        found = self._until.get(token)
        if found is None or now >= found[0]:
            return None
        return found[1]

    def put(self, token: str, principal: Principal, until: float, now: float) -> None:
        with self._lock:
            if len(self._until) >= self._max:  # forget the expired, then the oldest
                self._until = {t: e for t, e in self._until.items() if e[0] > now}
                while len(self._until) >= self._max:
                    del self._until[next(iter(self._until))]
            self._until[token] = (until, principal)


class TokenVerifier:
    """Verifies `Authorization: Bearer <jwt>` values (or bare tokens) into a Principal, or raises AuthError.

    With a jwks_url, a call may block for up to jwks_timeout_s while the key set is (re)fetched."""

    def __init__(self, settings: AccessSettings) -> None:
        self._settings = settings
        self._verified = _Verified()
        self._keys: _Keys
        if settings.jwks_file is not None:
            self._keys = _FileKeys(settings.jwks_file)
        elif settings.jwks_url is not None:
            self._keys = _UrlKeys(settings, settings.jwks_url)
        else:
            self._keys = _NoKeys()

    @property
    def blocking(self) -> bool:
        """True when `verify` may wait on the network (a jwks_url (re)fetch): call it off the event loop."""
        return self._keys.blocking

    def verify(self, value: str | None) -> Principal:
        token = _bearer(value)
        now = time.time()
        known = self._verified.get(token, now)
        if known is not None:
            return known
        key = self._key_for(token)
        claims = self._decode(token, key)
        principal = _principal(claims)
        s = self._settings
        until = min(float(claims["exp"]) + s.leeway_s, now + s.jwks_cache_s)
        self._verified.put(token, principal, until, now)
        return principal

    def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("token_invalid", "not a JWT") from None
        alg = self._settings.algorithm
        if header.get("alg") != alg:  # refuses `none`, HMAC with a public key as secret, any other family
            raise AuthError("token_invalid", f"algorithm {header.get('alg')!r} is not accepted (only {alg})")
        kid = header.get("kid")
        key = self._keys.find(kid if isinstance(kid, str) else None)
        if key is None or key.algorithm_name != alg:
            raise AuthError("token_invalid", f"no {alg} key with id {kid!r}")
        return key

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        s = self._settings
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[s.algorithm],
                issuer=s.issuer,
                audience=s.audience,
                leeway=s.leeway_s,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token_invalid", "the token is not valid yet (nbf or iat ahead)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("token_claims", f"claim {exc.claim!r} is required") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token_issuer", "the token is from another issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token_audience", "the token is for another audience") from None
        except jwt.PyJWTError as exc:
            raise AuthError("token_invalid", str(exc) or type(exc).__name__) from None


def _bearer(value: str | None) -> str:
    if not value or not value.strip():
        raise AuthError("token_missing", "send Authorization: Bearer <token>")
    scheme, _, rest = value.strip().partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else value.strip()
    if not token:
        raise AuthError("token_missing", "send Authorization: Bearer <token>")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError("token_invalid", f"token longer than {MAX_TOKEN_BYTES} bytes")
    return token


def _principal(claims: dict[str, Any]) -> Principal:
    values = {name: claims.get(name) for name in ("sub", "agency", "role")}
    for name, v in values.items():
        if not isinstance(v, str) or not v.strip() or len(v) > 256:
            raise AuthError("token_claims", f"claim {name!r} must be a non-empty string")
    return Principal(account=str(values["sub"]), agency=str(values["agency"]), role=str(values["role"]))


def issue_token(
    key_path: Path,
    *,
    sub: str,
    agency: str,
    role: str,
    iss: str,
    aud: str,
    ttl_s: int,
    now: float | None = None,
) -> str:
    """An EdDSA token signed with the local key (created if missing). Development and demo only."""
    key = load_or_create_key(key_path)
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "agency": agency,
        "role": role,
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl_s,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": key_id(key.public_key())})


def jwks_for(public_key: Ed25519PublicKey, kid: str) -> dict[str, Any]:
    """The JWKS document publishing `public_key` under `kid`, for the `[access] jwks_file` setting."""
    jwk = json.loads(OKPAlgorithm.to_jwk(public_key))
    jwk.update({"kid": kid, "alg": "EdDSA", "use": "sig"})
    return {"keys": [jwk]}
