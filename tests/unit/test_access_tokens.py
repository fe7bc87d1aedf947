"""Bearer token verification: a good token becomes a Principal; every forged, expired, misdirected or
malformed one is refused with its code, including the algorithm-confusion forgery (HS256 keyed with the
public key)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from collector.access.settings import AccessSettings
from collector.access.tokens import AuthError, Principal, TokenVerifier, issue_token, jwks_for
from common.signing import key_id, load_or_create_key

ISS = "https://idp.example.seoul"
AUD = "cctv-platform"


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "token.key"


@pytest.fixture
def verifier(tmp_path: Path, key_path: Path) -> TokenVerifier:
    key = load_or_create_key(key_path)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_for(key.public_key(), key_id(key.public_key()))))
    return TokenVerifier(AccessSettings(jwks_file=jwks, issuer=ISS, audience=AUD, leeway_s=30))


def full_claims(**overrides: object) -> dict[str, object]:
    """Every claim a good token carries, issued now; `overrides` replace claims (None removes one)."""
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "kim",
        "agency": "police-112",
        "role": "operator",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def mint(key_path: Path, **overrides: object) -> str:
    """A token from the dev key with every claim; `overrides` as in `full_claims`."""
    key = load_or_create_key(key_path)
    return jwt.encode(
        full_claims(**overrides), key, algorithm="EdDSA", headers={"kid": key_id(key.public_key())}
    )


def refused(verifier: TokenVerifier, value: str | None) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(value)
    assert info.value.http_status == 401
    return info.value.code


def test_issued_token_verifies_to_its_principal(verifier: TokenVerifier, key_path: Path) -> None:
    token = issue_token(key_path, sub="kim", agency="police-112", role="operator", iss=ISS, aud=AUD, ttl_s=60)
    expected = Principal(account="kim", agency="police-112", role="operator")
    assert verifier.verify(f"Bearer {token}") == expected
    assert verifier.verify(f"bearer   {token}") == expected
    assert verifier.verify(token) == expected


@pytest.mark.parametrize("value", [None, "", "   ", "Bearer", "Bearer   "])
def test_missing_token(verifier: TokenVerifier, value: str | None) -> None:
    assert refused(verifier, value) == "token_missing"


@pytest.mark.parametrize(
    "value", ["Bearer garbage", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 9000, "Bearer ..."]
)
def test_garbage_is_invalid(verifier: TokenVerifier, value: str) -> None:
    assert refused(verifier, value) == "token_invalid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, object], secret: bytes | None) -> str:
    claims = full_claims()
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def test_hs256_keyed_with_the_public_key_is_refused(verifier: TokenVerifier, key_path: Path) -> None:
    public = load_or_create_key(key_path).public_key()
    kid = key_id(public)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for secret in (pem, raw, _b64(raw).encode()):
        assert (
            refused(verifier, _forged({"alg": "HS256", "typ": "JWT", "kid": kid}, secret)) == "token_invalid"
        )


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_token_is_refused(verifier: TokenVerifier, key_path: Path, alg: str) -> None:
    kid = key_id(load_or_create_key(key_path).public_key())
    assert refused(verifier, _forged({"alg": alg, "kid": kid}, None)) == "token_invalid"


def test_token_signed_by_another_key_with_the_same_kid(verifier: TokenVerifier, key_path: Path) -> None:
    kid = key_id(load_or_create_key(key_path).public_key())
    token = jwt.encode(full_claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})
    assert refused(verifier, token) == "token_invalid"


def test_unknown_key_id(verifier: TokenVerifier, tmp_path: Path) -> None:
    assert refused(verifier, mint(tmp_path / "other.key")) == "token_invalid"


def test_tampered_claims_break_the_signature(verifier: TokenVerifier, key_path: Path) -> None:
    header, _, signature = mint(key_path).split(".")
    claims = full_claims(role="supervisor")
    assert refused(verifier, f"{header}.{_b64(json.dumps(claims).encode())}.{signature}") == "token_invalid"


NOW_MINUS_31, NOW_PLUS_120 = "<now - 31 s>", "<now + 120 s>"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"iss": "https://evil.example"}, "token_issuer"),
        ({"aud": "another-service"}, "token_audience"),
        ({"aud": ["another-service", "third"]}, "token_audience"),
        ({"exp": NOW_MINUS_31}, "token_expired"),
        ({"nbf": NOW_PLUS_120}, "token_invalid"),
        ({"iat": NOW_PLUS_120}, "token_invalid"),
        ({"iss": None}, "token_claims"),
        ({"aud": None}, "token_claims"),
        ({"exp": None}, "token_claims"),
        ({"sub": None}, "token_claims"),
        ({"agency": None}, "token_claims"),
        ({"role": None}, "token_claims"),
        ({"role": ""}, "token_claims"),
        ({"agency": 112}, "token_claims"),
        ({"exp": "tomorrow"}, "token_invalid"),
    ],
)
def test_claims_are_checked(
    verifier: TokenVerifier, key_path: Path, overrides: dict[str, object], code: str
) -> None:
    # Times relative to now are resolved when the test runs, not when it was collected minutes earlier.
    now = int(time.time())
    relative = {NOW_MINUS_31: now - 31, NOW_PLUS_120: now + 120}
    claims = {
        name: relative.get(value, value) if isinstance(value, str) else value
        for name, value in overrides.items()
    }
    assert refused(verifier, mint(key_path, **claims)) == code


def test_leeway_tolerates_a_little_clock_skew(verifier: TokenVerifier, key_path: Path) -> None:
    now = int(time.time())
    assert verifier.verify(mint(key_path, exp=now - 5, nbf=now + 5)).account == "kim"
    assert verifier.verify(mint(key_path, aud=["other", AUD])).account == "kim"


def test_a_verified_token_is_remembered_only_until_it_expires(
    verifier: TokenVerifier, key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature is checked once per token; the remembered token still expires at exp + leeway (30 s)."""
    exp = int(time.time()) - 28  # accepted within the leeway for one to two more seconds
    token = mint(key_path, exp=exp, iat=exp - 60)
    decoded: list[str] = []
    decode = verifier._decode
    monkeypatch.setattr(verifier, "_decode", lambda t, k: decoded.append(t) or decode(t, k))
    for _ in range(3):
        assert verifier.verify(f"Bearer {token}").account == "kim"
    assert decoded == [token]
    while time.time() < exp + 30:  # until the leeway has passed
        time.sleep(0.05)
    assert refused(verifier, token) == "token_expired"


def test_no_keys_configured_refuses_every_token(key_path: Path) -> None:
    assert refused(TokenVerifier(AccessSettings()), mint(key_path)) == "token_invalid"


def test_another_algorithm_family_is_refused(tmp_path: Path, key_path: Path) -> None:
    """A JWKS that also holds an RSA key does not make RS256 acceptable when EdDSA is configured."""
    ed = load_or_create_key(key_path)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())) | {"kid": "rsa-1"}
    jwks = jwks_for(ed.public_key(), key_id(ed.public_key()))
    jwks["keys"].append(rsa_jwk)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    verifier = TokenVerifier(AccessSettings(jwks_file=path, issuer=ISS, audience=AUD))
    token = jwt.encode(full_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert refused(verifier, token) == "token_invalid"
    assert verifier.verify(mint(key_path)).agency == "police-112"


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_configured_algorithm_from_an_identity_provider(tmp_path: Path, alg: str) -> None:
    if alg == "RS256":
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(65537, 2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk | {"kid": "idp-1", "use": "sig"}]}))
    verifier = TokenVerifier(AccessSettings(jwks_file=path, issuer=ISS, audience=AUD, algorithm=alg))
    claims = full_claims(sub="park", agency="fire-119")
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": "idp-1"})
    assert verifier.verify(f"Bearer {token}") == Principal("park", "fire-119", "operator")


@pytest.mark.parametrize(
    "values",
    [
        {"leeway_s": 61},
        {"algorithm": "HS256"},
        {"jwks_file": "a.json", "jwks_url": "https://idp/jwks", "issuer": ISS, "audience": AUD},
        {"jwks_file": "a.json", "audience": AUD},
        {"jwks_url": "https://idp/jwks", "issuer": ISS},
        {"jwks_url": "file:///etc/passwd", "issuer": ISS, "audience": AUD},
        {"keys": "a.json"},
    ],
)
def test_settings_refuse_unsafe_or_ambiguous_values(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AccessSettings.model_validate(values)


class _JwksServer:
    """A tiny JWKS endpoint on 127.0.0.1 whose key set the test can replace; counts its requests."""

    def __init__(self) -> None:
        self.document: dict[str, object] = {"keys": []}
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"


@pytest.fixture
def jwks_server() -> Iterator[_JwksServer]:
    srv = _JwksServer()
    thread = threading.Thread(target=srv.server.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.server.shutdown()
    srv.server.server_close()
    thread.join(5)


def _serve_key(server: _JwksServer, path: Path) -> None:
    key = load_or_create_key(path)
    server.document = jwks_for(key.public_key(), key_id(key.public_key()))


def _url_verifier(server: _JwksServer, refetch_s: float) -> TokenVerifier:
    return TokenVerifier(
        AccessSettings(jwks_url=server.url, issuer=ISS, audience=AUD, jwks_refetch_s=refetch_s)
    )


def test_jwks_url_keys_are_fetched_once_and_cached(jwks_server: _JwksServer, tmp_path: Path) -> None:
    _serve_key(jwks_server, tmp_path / "idp.key")
    verifier = _url_verifier(jwks_server, refetch_s=30)
    for _ in range(3):
        assert verifier.verify(mint(tmp_path / "idp.key")).account == "kim"
    forged_kids = [mint(tmp_path / f"forged{i}.key") for i in range(5)]
    for token in forged_kids:  # unknown kids within the refetch interval do not each fetch the set
        assert refused(verifier, token) == "token_invalid"
    assert jwks_server.requests == 1


def test_jwks_url_key_rotation_is_picked_up(jwks_server: _JwksServer, tmp_path: Path) -> None:
    _serve_key(jwks_server, tmp_path / "first.key")
    verifier = _url_verifier(jwks_server, refetch_s=1)
    assert verifier.verify(mint(tmp_path / "first.key")).account == "kim"
    _serve_key(jwks_server, tmp_path / "second.key")  # the identity provider rotates its key
    rotated = mint(tmp_path / "second.key", sub="lee")
    deadline = time.monotonic() + 5  # the set is refetched once jwks_refetch_s has passed
    while True:
        try:
            assert verifier.verify(rotated).account == "lee"
            break
        except AuthError as exc:
            assert exc.code == "token_invalid"
            assert time.monotonic() < deadline, "the rotated key was never fetched"
            time.sleep(0.1)
    assert jwks_server.requests == 2


def test_unreachable_jwks_url_is_reported(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.server_close()  # nothing listens there any more
    verifier = TokenVerifier(AccessSettings(jwks_url=url, issuer=ISS, audience=AUD, jwks_timeout_s=2))
    with pytest.raises(AuthError) as info:
        verifier.verify(mint(tmp_path / "k.key"))
    assert (info.value.code, info.value.http_status) == ("keys_unavailable", 503)
