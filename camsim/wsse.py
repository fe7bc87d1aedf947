"""Camera-side authentication: WS-UsernameToken PasswordDigest, HTTP Digest and Basic.

The UsernameToken's Created time is checked against the camera's own (possibly skewed) clock,
as real cameras do: a client that does not compensate the skew is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from datetime import UTC, datetime

from camsim.soap import UsernameToken

CREATED_TOLERANCE_S = 5.0  # allowed |Created - camera clock|
NONCE_CACHE_SIZE = 64  # per camera; a camera sees a few requests a minute in normal use
DIGEST_NONCE_LIFETIME_S = 300.0

# A URI naming the token type, not a password.
_WSS_UT_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_DIGEST = f"{_WSS_UT_PROFILE}#PasswordDigest"


class AuthError(Exception):
    """Authentication failed; the message says why (never the password)."""


class NonceCache:
    """Recently seen WS-Security nonces, bounded in size and age, to refuse replays."""

    __slots__ = ("_max", "_seen")

    def __init__(self, max_size: int = NONCE_CACHE_SIZE) -> None:
        self._seen: dict[str, float] = {}
        self._max = max_size

    def add(self, nonce: str, now: float) -> bool:
        """Remember `nonce`; False if it was already seen (a replay)."""
        if nonce in self._seen:
            return False
        horizon = now - 2 * CREATED_TOLERANCE_S  # older tokens fail the Created check anyway
        while self._seen and (len(self._seen) >= self._max or next(iter(self._seen.values())) < horizon):
            del self._seen[next(iter(self._seen))]
        self._seen[nonce] = now
        return True


def parse_created(value: str, *, reject_plus_offset: bool = False) -> float:
    """Seconds since the epoch of an xs:dateTime; naive values are taken as UTC."""
    value = value.strip()
    if reject_plus_offset and not value.endswith("Z"):
        raise AuthError("Created must be a UTC time ending in Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise AuthError("Created is not an xs:dateTime") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def verify_username_token(
    token: UsernameToken | None,
    *,
    username: str,
    password: str,
    camera_now: float,
    nonces: NonceCache,
    reject_plus_offset: bool = False,
) -> None:
    """Raise AuthError unless `token` is a fresh, valid PasswordDigest for username/password."""
    if token is None:
        raise AuthError("no WS-Security UsernameToken")
    if token.password_type != PASSWORD_DIGEST:
        raise AuthError("only PasswordDigest is accepted")
    created = parse_created(token.created, reject_plus_offset=reject_plus_offset)
    if abs(created - camera_now) > CREATED_TOLERANCE_S:
        raise AuthError(f"Created is {created - camera_now:+.0f} s off the camera clock")
    try:
        nonce = base64.b64decode(token.nonce_b64, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("Nonce is not base64") from None
    # The UsernameToken profile mandates SHA-1: Base64(SHA1(nonce + created + password)).
    sha1 = hashlib.sha1(nonce + token.created.encode() + password.encode())  # noqa: S324
    expected = base64.b64encode(sha1.digest()).decode()
    valid_user = hmac.compare_digest(token.username.encode(), username.encode())
    if not (valid_user and hmac.compare_digest(expected.encode(), token.password.strip().encode())):
        raise AuthError("wrong username or password")
    if not nonces.add(token.nonce_b64, camera_now):
        raise AuthError("replayed nonce")


_AUTH_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_auth_params(value: str) -> dict[str, str]:
    """Key/value pairs of a Digest Authorization header (after the scheme)."""
    return {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _AUTH_PARAM_RE.finditer(value)}


def _md5(value: str) -> str:
    return hashlib.md5(value.encode()).hexdigest()  # noqa: S324 - RFC 2617 mandates MD5


class HttpDigest:
    """RFC 7616/2617 Digest (MD5, qop=auth) with stateless, HMAC-signed, expiring nonces."""

    __slots__ = ("_secret", "realm")

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._secret = os.urandom(16)

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, now: float) -> str:
        """A WWW-Authenticate header value."""
        stamp = f"{int(now):x}"
        nonce = f"{stamp}{self._sign(stamp)}"
        return f'Digest realm="{self.realm}", qop="auth", algorithm=MD5, nonce="{nonce}"'

    def _nonce_fresh(self, nonce: str, now: float) -> bool:
        stamp, signature = nonce[:-32], nonce[-32:]
        if not stamp or not hmac.compare_digest(signature, self._sign(stamp)):
            return False
        try:
            return 0 <= now - int(stamp, 16) <= DIGEST_NONCE_LIFETIME_S
        except ValueError:
            return False

    def verify(
        self, authorization: str, *, method: str, uri: str, username: str, password: str, now: float
    ) -> bool:
        """True if `authorization` (the whole header) is a valid Digest answer for this request."""
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "digest":
            return False
        p = parse_auth_params(rest)
        if p.get("username") != username or p.get("realm") != self.realm or p.get("uri") != uri:
            return False
        if p.get("algorithm", "MD5").upper() != "MD5" or not self._nonce_fresh(p.get("nonce", ""), now):
            return False
        ha1 = _md5(f"{username}:{self.realm}:{password}")
        ha2 = _md5(f"{method}:{uri}")
        if p.get("qop") == "auth":
            expected = _md5(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
        elif "qop" not in p:  # RFC 2069 clients
            expected = _md5(f"{ha1}:{p['nonce']}:{ha2}")
        else:
            return False
        return hmac.compare_digest(expected, p.get("response", ""))


def verify_basic(authorization: str, *, username: str, password: str) -> bool:
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, given = base64.b64decode(rest.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(user.encode(), username.encode()) and hmac.compare_digest(
        given.encode(), password.encode()
    )
