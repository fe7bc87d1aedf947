"""`cctv-collector token issue|jwks` and `validate-config` of the [access] section, as operators use them."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from collector.access.settings import AccessSettings
from collector.access.tokens import Principal, TokenVerifier
from collector.cli import main

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "policy.example.toml"


def issue(key: Path, *extra: str) -> int:
    return main(
        ["token", "issue", "--key", str(key), "--sub", "kim", "--agency", "police-112", "--role", "operator",
         "--iss", "dev-idp", "--aud", "cctv", *extra]
    )  # fmt: skip


def jwks_file(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["token", "jwks", "--key", str(key)]) == 0
    path = tmp_path / "jwks.json"
    path.write_text(capsys.readouterr().out)
    return path


def test_issued_token_verifies_against_the_printed_jwks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "keys" / "dev.key"
    assert issue(key, "--ttl", "600", "--json") == 0
    issued = json.loads(capsys.readouterr().out)
    assert key.stat().st_mode & 0o777 == 0o600  # the key was created, private
    verifier = TokenVerifier(
        AccessSettings(jwks_file=jwks_file(tmp_path, key, capsys), issuer="dev-idp", audience="cctv")
    )
    assert verifier.verify(f"Bearer {issued['token']}") == Principal("kim", "police-112", "operator")
    assert issued["kid"] == json.loads((tmp_path / "jwks.json").read_text())["keys"][0]["kid"]
    assert 590 <= datetime.fromisoformat(issued["expires_at"]).timestamp() - time.time() <= 600


def test_token_issue_refuses_an_absurd_lifetime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert issue(tmp_path / "dev.key", "--ttl", "0") == 2
    assert "--ttl" in capsys.readouterr().err


def test_token_issue_refuses_a_key_that_is_not_ed25519(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    assert issue(bad) == 2
    assert str(bad) in capsys.readouterr().err


def config(tmp_path: Path, access: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(f"[access]\n{access}")
    return path


def test_validate_config_loads_keys_and_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jwks = jwks_file(tmp_path, tmp_path / "dev.key", capsys)
    path = config(tmp_path, f'jwks_file = "{jwks}"\nissuer = "i"\naudience = "a"\npolicy_file = "{POLICY}"\n')
    assert main(["validate-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "access.jwks_file: 1 EdDSA key(s)" in out
    assert "access.policy_file: 7 agencies: police-112, fire-119" in out


def test_validate_config_reports_policy_and_key_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[agencies.x]\nname = "X"\nroles = ["operator"]\ndistricts = ["atlantis"]\n')
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    path = config(tmp_path, f'jwks_file = "{jwks}"\nissuer = "i"\naudience = "a"\npolicy_file = "{policy}"\n')
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"access.jwks_file: cannot read JWKS {jwks}" in err
    assert f"access.policy_file ({policy}): agencies.x.districts: " in err


def test_validate_config_refuses_a_key_set_without_the_configured_algorithm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = jwks_file(tmp_path, tmp_path / "dev.key", capsys)  # an Ed25519 key
    path = config(tmp_path, f'jwks_file = "{jwks}"\nissuer = "i"\naudience = "a"\nalgorithm = "RS256"\n')
    assert main(["validate-config", str(path)]) == 2
    assert "access.jwks_file: no RS256 key" in capsys.readouterr().err


def test_validate_config_says_an_unconfigured_api_fails_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-config", str(config(tmp_path, "leeway_s = 10\n"))]) == 0
    out = capsys.readouterr().out
    assert "every API request is refused (401)" in out
    assert "every action is refused (403)" in out


def test_validate_config_refuses_a_long_leeway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-config", str(config(tmp_path, "leeway_s = 300\n"))]) == 2
    assert "access.leeway_s: Input should be less than or equal to 60" in capsys.readouterr().err
