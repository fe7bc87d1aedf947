"""What `cctv-collector validate-config` reports on the `[access]` section: keys and policy, loaded."""

from __future__ import annotations

import jwt

from collector.access.policy import load_policy
from collector.access.settings import AccessSettings
from collector.access.tokens import read_jwks
from common.settings import ConfigError


def check_access(settings: AccessSettings) -> tuple[list[str], list[str]]:
    """(errors, notes): errors as `access.key: message` lines; notes: what loaded, or what fails closed."""
    errors: list[str] = []
    notes: list[str] = []
    _check_keys(settings, errors, notes)
    try:
        policy = load_policy(settings.policy_file)
    except ConfigError as exc:
        errors += [f"access.policy_file ({exc.source}): {line}" for line in exc.errors]
    else:
        if settings.policy_file is None:
            notes.append("access: no policy_file: every action is refused (403)")
        else:
            notes.append(f"access.policy_file: {len(policy.agencies)} agencies: {', '.join(policy.agencies)}")
    return errors, notes


def _check_keys(settings: AccessSettings, errors: list[str], notes: list[str]) -> None:
    alg = settings.algorithm
    if settings.jwks_file is not None:
        name = "access.jwks_file"
        try:
            keys = read_jwks(settings.jwks_file)
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
            return
    elif settings.jwks_url is not None:
        name = "access.jwks_url"
        client = jwt.PyJWKClient(settings.jwks_url, timeout=settings.jwks_timeout_s)
        try:
            keys = client.get_jwk_set()
        except jwt.PyJWTError as exc:
            errors.append(f"{name}: cannot fetch {settings.jwks_url}: {exc}")
            return
    else:
        notes.append("access: no jwks_file or jwks_url: every API request is refused (401)")
        return
    usable = [k.key_id or "(no kid)" for k in keys if k.algorithm_name == alg]
    if usable:
        notes.append(f"{name}: {len(usable)} {alg} key(s): {', '.join(usable)}")
    else:
        errors.append(f"{name}: no {alg} key (access.algorithm) in the key set")
