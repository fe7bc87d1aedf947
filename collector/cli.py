"""`cctv-collector`: run the collector and query its index.

    cctv-collector run --config collector.toml
    cctv-collector validate-config collector.toml        # each error as `key.path: message`, exit 2
    cctv-collector migrate --config collector.toml
    cctv-collector cameras [--district D] [--state S] [--json]
    cctv-collector uptime --district gangnam --since 7d [--camera ID] [--json]
    cctv-collector reconcile [--rebuild] [--json]
    cctv-collector token issue --key K --sub S --agency A --role R --iss I --aud A [--ttl 3600] [--json]
    cctv-collector token jwks --key K > jwks.json     # the public key as a JWKS for [access] jwks_file
    cctv-collector commands public-key                   # the PEM districts configure in their agents
    cctv-collector audit verify [--json]                 # exit 0 only when the audit trail holds
    cctv-collector audit report --month 2026-11 --out DIR
    cctv-collector healthcheck [--timeout 3]             # exit 0 when the running collector is healthy
    cctv-collector broker-acl --districts mapo,jung [--out acl] [--passwords-dir D --passwd-out passwd]

Every command reads the TOML file given with --config (optional) and COLLECTOR__* environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from collector import broker_acl
from collector.audit import cli as audit_cli
from collector.config import CollectorSettings
from collector.index.store import CameraView, Store, open_store
from common import jsonlog
from common.settings import EXIT_CONFIG, ConfigError, load
from contract.messages import CameraState

EXIT_OK = 0
EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML settings file (environment COLLECTOR__* overrides)")
    p = argparse.ArgumentParser(prog="cctv-collector", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common], help="ingest telemetry and serve the API until SIGTERM")
    check = sub.add_parser("validate-config", help="check a settings file; exit 2 listing every error")
    check.add_argument("file", type=Path)
    sub.add_parser("migrate", parents=[common], help="apply pending schema migrations")
    cams = sub.add_parser("cameras", parents=[common], help="list indexed cameras")
    cams.add_argument("--district")
    cams.add_argument("--state", choices=CameraState.__args__)  # type: ignore[attr-defined]
    cams.add_argument("--json", action="store_true")
    up = sub.add_parser("uptime", parents=[common], help="availability per camera and district")
    up.add_argument("--district", required=True)
    up.add_argument("--since", default="7d", help="window length: 30m, 24h, 7d, 2w (default 7d)")
    up.add_argument("--camera")
    up.add_argument("--json", action="store_true")
    rec = sub.add_parser("reconcile", parents=[common], help="compare the clip index with the S3 bucket")
    rec.add_argument("--rebuild", action="store_true", help="rebuild the clip index from the bucket alone")
    rec.add_argument("--json", action="store_true")
    _token_parser(sub)
    cmds = sub.add_parser("commands", help="commands to agents")
    cmds_sub = cmds.add_subparsers(dest="commands_command", required=True)
    cmds_sub.add_parser(
        "public-key", parents=[common], help="print the public key that signs commands (created if missing)"
    )
    audit_cli.add_parser(sub, common)
    health = sub.add_parser(
        "healthcheck", parents=[common], help="exit 0 when the running collector answers and ingest commits"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the API (default 3)")
    broker_acl.add_parser(sub)
    return p


def _token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser(
        "token", help="development and demo tokens from a local Ed25519 key"
    ).add_subparsers(dest="what", required=True)
    issue = token.add_parser("issue", help="print a signed token (the key is created if missing)")
    jwks = token.add_parser("jwks", help="print the JWKS publishing the key's public half")
    for p in (issue, jwks):
        p.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    for name in ("sub", "agency", "role", "iss", "aud"):
        issue.add_argument(f"--{name}", required=True)
    issue.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    issue.add_argument("--json", action="store_true")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command == "broker-acl":
        return broker_acl.run(args, argv)
    if args.command == "validate-config":
        return _validate(args.file)
    if args.command == "token":
        return _token(args)
    try:
        settings = load(CollectorSettings, args.config)
    except ConfigError as exc:
        _print_config_errors(exc)
        return EXIT_CONFIG
    if args.command == "healthcheck":
        return _healthcheck(settings, args.timeout)
    jsonlog.setup(settings.log_level)
    if args.command == "run":
        from collector.app import run

        try:
            asyncio.run(run(settings))
        except ConfigError as exc:  # found at start: the policy or the token keys
            _print_config_errors(exc)
            return EXIT_CONFIG
        return EXIT_OK
    if args.command == "commands":
        return _public_key(settings)
    store = open_store(settings.store.url)
    try:
        return _query(args, settings, store)
    finally:
        store.close()


def _query(args: argparse.Namespace, settings: CollectorSettings, store: Store) -> int:
    if args.command == "migrate":
        applied = store.migrate()
        print(f"schema version {store.schema_version()} (applied: {applied or 'none'})")
        return EXIT_OK
    store.migrate()
    if args.command == "cameras":
        return _cameras(store, args.district, args.state, args.json)
    if args.command == "uptime":
        return _uptime(store, args)
    if args.command == "audit":
        return audit_cli.run(args, settings, store)
    return _reconcile(store, settings, args.rebuild, args.json)


def _public_key(settings: CollectorSettings) -> int:
    from collector.commands.signing import CommandSigner

    signer = CommandSigner(settings.command_key_file, settings.commands.ttl_s)
    sys.stdout.write(signer.public_pem().decode())
    print(f"key id {signer.key_id} ({settings.command_key_file})", file=sys.stderr)
    return EXIT_OK


def _healthcheck(settings: CollectorSettings, timeout_s: float) -> int:
    from collector.healthcheck import check

    problems = check(settings, timeout_s)
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if not problems:
        print("healthy")
    return EXIT_FAILED if problems else EXIT_OK


def _validate(path: Path) -> int:
    from collector.access.check import check_access

    try:
        settings = load(CollectorSettings, path)
    except ConfigError as exc:
        _print_config_errors(exc)
        return EXIT_CONFIG
    errors, notes = check_access(settings.access)
    if errors:
        _print_config_errors(ConfigError(str(path), errors))
        return EXIT_CONFIG
    for note in notes:
        print(note)
    print(f"{path}: OK")
    return EXIT_OK


def _token(args: argparse.Namespace) -> int:
    from collector.access.tokens import issue_token, jwks_for
    from common.signing import key_id, load_or_create_key

    try:
        key = load_or_create_key(args.key)
    except (OSError, ValueError) as exc:
        print(f"--key {args.key}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.what == "jwks":
        print(json.dumps(jwks_for(key.public_key(), key_id(key.public_key())), indent=2))
        return EXIT_OK
    if not 1 <= args.ttl <= 7 * 86_400:
        print("--ttl: between 1 s and 7 days", file=sys.stderr)
        return EXIT_CONFIG
    now = time.time()
    claims = {name: getattr(args, name) for name in ("sub", "agency", "role", "iss", "aud")}
    token = issue_token(args.key, ttl_s=args.ttl, now=now, **claims)
    if args.json:
        print(
            json.dumps({"token": token, "kid": key_id(key.public_key()), "expires_at": _iso(now + args.ttl)})
        )
    else:
        print(token)
    return EXIT_OK


def _print_config_errors(exc: ConfigError) -> None:
    print(f"invalid configuration ({exc.source}):", file=sys.stderr)
    for line in exc.errors:
        print(line, file=sys.stderr)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _cameras(store: Store, district: str | None, state: str | None, as_json: bool) -> int:
    rows = store.cameras(district, state)
    if as_json:
        print(json.dumps([_camera_dict(r) for r in rows], ensure_ascii=False, indent=2))
        return EXIT_OK
    header = ("camera", "district", "name", "state", "reasons", "manufacturer", "model", "last seen")
    table = [
        header,
        *(
            (
                r.camera_id,
                r.district,
                r.name,
                r.state,
                ",".join(r.reasons),
                r.manufacturer,
                r.model,
                _iso(r.last_seen) or "-",
            )
            for r in rows
        ),
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _camera_dict(r: CameraView) -> dict[str, object]:
    return {
        "camera_id": r.camera_id,
        "district": r.district,
        "name": r.name,
        "state": r.state,
        "reasons": r.reasons,
        "manufacturer": r.manufacturer,
        "model": r.model,
        "last_seen": _iso(r.last_seen),
        "agent_id": r.agent_id,
        "agent_online": r.agent_online,
        "place_district": r.place_district,
    }


def _uptime(store: Store, args: argparse.Namespace) -> int:
    from collector.index import uptime

    try:
        window = uptime.parse_duration(args.since)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    until = time.time()
    cameras, total = uptime.report(store, args.district, until - window, until, args.camera)
    if args.json:
        print(
            json.dumps(
                {
                    "district": args.district,
                    "since": _iso(until - window),
                    "until": _iso(until),
                    "available_states": ["online", "degraded"],
                    "cameras": [c.as_dict() for c in cameras],
                    "district_total": total.as_dict(),
                }
            )
        )
    else:
        print(uptime.format_table(cameras, total))
    return EXIT_OK


def _reconcile(store: Store, settings: CollectorSettings, rebuild: bool, as_json: bool) -> int:
    """0: index and bucket agree; 1: problems found (invalid manifests, missing objects, rebuild refused,
    bucket unreadable); 2: configuration error."""
    from collector.index.reconcile import ReconcileError, reconcile
    from common.s3 import make_client

    if not settings.s3.bucket:
        print("s3.bucket is not configured", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result = reconcile(store, make_client(settings.s3), settings.s3.bucket, rebuild=rebuild)
    except ReconcileError as exc:
        print(f"reconcile: {exc}; the index is unchanged", file=sys.stderr)
        return EXIT_FAILED
    counts = result.as_dict()
    if as_json:
        print(json.dumps(counts))
    else:
        print(", ".join(f"{name.replace('_', ' ')} {n}" for name, n in counts["counts"].items()))
        if result.replaced is not None:
            print(f"rebuilt: {result.replaced} rows replaced by {len(result.indexed)}")
        if result.refused:
            print(f"rebuild refused: {result.refused}", file=sys.stderr)
    return EXIT_OK if result.clean else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
