"""`cctv-agent`: run the district agent, sweep once, check a configuration file, export the provision ledger,
check a running agent's health.

Exit codes: 0 success, 1 runtime failure (healthcheck: unhealthy), 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import PartialCredentialsError

from agent.command_policy import CommandPolicy
from agent.config import AgentSettings
from agent.credentials import CredentialStore
from agent.ledger import load_ledger
from agent.registry import CameraRecord
from common import jsonlog
from common.progress import ProgressReporter
from common.settings import EXIT_CONFIG, ConfigError, load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cctv-agent", description="District CCTV gateway agent.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="discover cameras, watch their health and report over MQTT until stopped"
    )
    run.add_argument("--config", type=Path, required=True, help="agent TOML configuration file")
    discover = sub.add_parser(
        "discover", help="enumerate the ledger's cameras once, run WS-Discovery if configured, print a table"
    )
    discover.add_argument("--config", type=Path, required=True, help="agent TOML configuration file")
    discover.add_argument("--json", action="store_true", help="print JSON instead of a table")
    health = sub.add_parser(
        "healthcheck", help="exit 0 when the running agent is connected and observing its cameras"
    )
    health.add_argument("--config", type=Path, required=True, help="agent TOML configuration file")
    health.add_argument(
        "--max-age", type=float, help="seconds since the last liveness round (default: 4 intervals, >= 60)"
    )
    validate = sub.add_parser("validate-config", help="check a configuration file; exit 2 if it is invalid")
    validate.add_argument("file", type=Path)
    key = sub.add_parser("public-key", help="print the PEM public key that verifies this agent's manifests")
    key.add_argument("--config", type=Path, required=True, help="agent TOML configuration file")
    ledger = sub.add_parser("ledger", help="the third-party provision ledger of clips handed over")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    export = ledger_sub.add_parser(
        "export", help="write the clips handed over as CSV (exit 1 if there is no ledger yet)"
    )
    export.add_argument("--config", type=Path, required=True, help="agent TOML configuration file")
    export.add_argument("--since", type=_moment, help="from this time on (ISO 8601; UTC if no offset)")
    export.add_argument("--until", type=_moment, help="before this time (ISO 8601; UTC if no offset)")
    export.add_argument("--out", type=Path, help="CSV file to write (default: standard output)")
    sub.add_parser(
        "verify-clip",
        add_help=False,
        help="verify a clip against its signed manifest (see `cctv-agent verify-clip --help`)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify-clip"]:
        from agent.clips.manifest import verify_main

        return verify_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = load(AgentSettings, args.config if args.command != "validate-config" else args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "ledger":
        return _export_ledger(settings, args.since, args.until, args.out)
    if args.command == "healthcheck":
        return _healthcheck(settings, args.max_age)
    problems = check_inputs(settings)
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "validate-config":
        print(f"{args.file}: ok")
        return 0
    jsonlog.setup(settings.log_level)
    if args.command == "public-key":
        from common.signing import load_or_create_key, public_key_pem

        sys.stdout.write(public_key_pem(load_or_create_key(settings.clips.key_file)).decode())
        return 0
    if args.command == "discover":
        return asyncio.run(_discover(settings, args.json))
    try:
        return asyncio.run(_run(settings))
    except PartialCredentialsError as exc:  # half an AWS_* key pair in the environment (ours are validated)
        print(f"s3: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def check_inputs(settings: AgentSettings) -> list[str]:
    """Problems with the files the configuration names: the ledger must load, the secrets file must parse,
    the collector's public keys must be Ed25519 PEM files.

    Ledger rows with errors are reported but do not fail the check: the rest of the ledger still loads.
    """
    if not settings.ledger.is_file():
        return [f"{settings.ledger}: ledger file not found"]
    try:
        CredentialStore.from_file(settings.secrets_file)
        CommandPolicy.load(settings.commands, settings.district)
    except ConfigError as exc:
        return [f"{exc.source}: {line}" for line in exc.errors]
    cameras, row_problems = load_ledger(settings.ledger)
    for problem in row_problems:
        print(f"warning: {problem}", file=sys.stderr)
    return [] if cameras else [f"{settings.ledger}: no usable camera rows"]


async def _run(settings: AgentSettings) -> int:
    from agent.app import Agent  # not at the top: `healthcheck` runs every 30 s and needs none of it

    agent = Agent(settings)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=agent.metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.run(stop, progress=ProgressReporter("sweep"))
    return 0


async def _discover(settings: AgentSettings, as_json: bool) -> int:
    """One enumeration sweep (and WS-Discovery, when configured) printed as a table or JSON."""
    from agent.app import Agent

    agent = Agent(settings)
    await agent.sweep(ProgressReporter("discover"))
    reconciliation = await agent.discover()
    rows = [_row(record) for record in agent.registry.records.values()]
    summary = reconciliation.summary() if reconciliation is not None else None
    if as_json:
        print(json.dumps({"cameras": rows, "discovery": summary}, ensure_ascii=False))
    else:
        _print_table(rows)
        if summary is not None:
            print("discovery:", json.dumps(summary["counts"]))
    return 0


def _row(record: CameraRecord) -> dict[str, Any]:
    info = record.info
    return {
        "camera_id": record.camera_id,
        "state": record.state,
        "reasons": record.reasons,
        "manufacturer": info.manufacturer if info else "",
        "model": info.model if info else "",
        "firmware": info.firmware if info else "",
        "firmware_profile": record.firmware_profile.name if record.firmware_profile else None,
        "clock_offset_s": record.observation.clock_offset_s,
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'camera':<20} {'state':<12} {'manufacturer':<16} {'model':<20} reasons")
    for row in rows:
        cells = (row["camera_id"], row["state"], row["manufacturer"], row["model"])
        print("{:<20} {:<12} {:<16} {:<20} ".format(*cells) + ",".join(row["reasons"]))


def _healthcheck(settings: AgentSettings, max_age_s: float | None) -> int:
    from agent.health_status import problems

    if max_age_s is None:
        max_age_s = max(60.0, 4 * settings.health.liveness_interval_s)
    found = problems(settings.status_file, max_age_s, time.time())
    for problem in found:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if not found:
        print("healthy")
    return 1 if found else 0


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _export_ledger(settings: AgentSettings, since: datetime | None, until: datetime | None,
                   out: Path | None) -> int:  # fmt: skip
    from agent.provisions import ledger_path, read_rows, write_csv

    path = ledger_path(settings.clips.spool_dir)
    try:
        rows = read_rows(path, since, until)
    except FileNotFoundError:
        print(f"{path}: no provision ledger (no clip handed over yet, or another state directory)",
              file=sys.stderr)  # fmt: skip
        return 1
    except sqlite3.Error as exc:
        print(f"{path}: cannot read the provision ledger: {exc}", file=sys.stderr)
        return 1
    if out is None:
        write_csv(rows, sys.stdout)
        return 0
    try:
        with out.open("w", newline="", encoding="utf-8") as fh:
            write_csv(rows, fh)
    except OSError as exc:
        print(f"{out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
