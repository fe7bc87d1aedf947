"""`cctv-collector audit verify|report`: the auditor's commands (exit 0 all holds, 1 something is wrong,
2 configuration)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from collector.audit.verify import MAX_LISTED, Verdict, verify
from collector.config import CollectorSettings
from collector.index.store import Store, StoreError
from common.settings import EXIT_CONFIG

EXIT_OK, EXIT_FAILED = 0, 1


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    audit = sub.add_parser("audit", help="verify the audit trail, write the monthly review")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser(
        "verify", parents=[common], help="check the hash chain against the checkpoints"
    )
    check.add_argument("--json", action="store_true")
    report = commands.add_parser(
        "report", parents=[common], help="monthly review and provision ledgers (CSV)"
    )
    report.add_argument("--month", required=True, help="YYYY-MM, in Korea Standard Time")
    report.add_argument("--out", type=Path, required=True, help="directory for the CSV files")
    report.add_argument("--unusual-factor", type=float, default=3.0, help="x the agency's median (default 3)")
    report.add_argument("--unusual-threshold", type=int, help="accesses per month that are always unusual")


def run(args: argparse.Namespace, settings: CollectorSettings, store: Store) -> int:
    if args.audit_command == "verify":
        return _verify(settings, store, args.json)
    return _report(store, args)


def _verify(settings: CollectorSettings, store: Store, as_json: bool) -> int:
    from collector.audit.checkpoints import CheckpointError, open_bucket, trusted_keys

    if not settings.audit.bucket:
        print("audit.bucket is not configured: there are no checkpoints to verify against", file=sys.stderr)
        return EXIT_CONFIG
    try:
        trusted = trusted_keys(settings.audit)
    except (OSError, ValueError) as exc:
        print(f"audit keys: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        verdict = verify(store, open_bucket(settings), trusted)
    except (CheckpointError, StoreError) as exc:
        print(f"audit verify: cannot read: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        print(json.dumps(verdict.as_dict(), ensure_ascii=False))
    else:
        _print_verdict(verdict)
    return EXIT_OK if verdict.ok else EXIT_FAILED


def _print_verdict(verdict: Verdict) -> None:
    span = f"{verdict.records} records (seq {verdict.first}..{verdict.last.seq})"
    anchored = f"{verdict.checkpoints} checkpoints, newest at seq {verdict.newest_checkpoint}"
    if verdict.ok:
        print(f"audit chain OK: {span}, {anchored}")
        return
    print(f"audit chain BROKEN: {span}, {anchored}", file=sys.stderr)
    if verdict.first_bad is not None:
        print(f"first bad record: seq {verdict.first_bad.seq}: {verdict.first_bad.reason}", file=sys.stderr)
    for problem in verdict.problems[:MAX_LISTED]:
        print(f"  seq {problem.seq}: {problem.reason}", file=sys.stderr)


def _report(store: Store, args: argparse.Namespace) -> int:
    from collector.audit.report import month_bounds, write_report

    try:
        month_bounds(args.month)
    except ValueError:
        print(f"--month {args.month}: expected YYYY-MM", file=sys.stderr)
        return EXIT_CONFIG
    try:
        written = write_report(store, args.month, args.out, args.unusual_factor, args.unusual_threshold)
    except StoreError as exc:
        print(f"audit report: cannot read the audit log: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(written, ensure_ascii=False))
    return EXIT_OK
