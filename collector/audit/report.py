"""`cctv-collector audit report --month 2026-11`: the monthly access review and districts' provision ledgers.

Months, days and hours are Korea Standard Time (UTC+9, no daylight saving). Per account and per agency:
- accesses: records with result `allowed`; refusals: result `refused`; errors: result `error`;
- off-hours accesses: accesses between 22:00 and 07:00 or on a Saturday or Sunday (public holidays are not
  known here: reviewers add them);
- unusual volume: an account whose accesses exceed `factor` times its agency's median account (the median
  over the agency's accounts active that month), or the absolute `threshold` when one is given.
Per district, the third-party provision ledger (PIPA Art. 18, as the platform saw it): every allowed clip
request, playback URL and thumbnail URL for one of its cameras, with agency, account, incident, purpose and
window. Each district writes its own file, with a header only when nothing was provided.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from collector.audit.chain import AuditRecord, entries
from collector.index.store import Store
from contract.districts import DISTRICTS

Account = tuple[str, str]  # (agency, account)
KST = timezone(timedelta(hours=9), "KST")
PROVISION_ACTIONS = ("clip.request", "clip.playback", "clip.thumbnail")
LEDGER_COLUMNS = (
    "time_kst",
    "action",
    "agency",
    "account",
    "incident",
    "purpose",
    "service",
    "camera_id",
    "window_start_kst",
    "window_end_kst",
    "request_id",
    "client_ip",
)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """`2026-11` -> its first instant and the next month's, in KST; ValueError for anything else."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=KST)
    after = (start + timedelta(days=32)).replace(day=1)
    return start, after


def off_hours(at: float) -> bool:
    local = datetime.fromtimestamp(at, KST)
    return local.weekday() >= 5 or local.hour >= 22 or local.hour < 7


@dataclass
class Counts:
    accesses: int = 0
    refusals: int = 0
    errors: int = 0
    off_hours_accesses: int = 0

    def add(self, record: AuditRecord) -> None:
        if record.result == "allowed":
            self.accesses += 1
            self.off_hours_accesses += off_hours(record.at)
        elif record.result == "refused":
            self.refusals += 1
        else:
            self.errors += 1


def account_counts(records: Iterable[AuditRecord]) -> dict[Account, Counts]:
    counts: dict[Account, Counts] = defaultdict(Counts)
    for record in records:
        counts[(record.agency, record.account)].add(record)
    return dict(sorted(counts.items()))


def unusual(counts: dict[Account, Counts], factor: float, threshold: int | None) -> dict[Account, str]:
    """Why each account with an unusual volume is one (accounts not listed are usual)."""
    by_agency: dict[str, list[int]] = defaultdict(list)
    for (agency, _), c in counts.items():
        by_agency[agency].append(c.accesses)
    reasons = {}
    for (agency, account), c in counts.items():
        median = statistics.median(by_agency[agency])
        if threshold is not None and c.accesses > threshold:
            reasons[(agency, account)] = f"above the threshold of {threshold}"
        elif median and c.accesses > factor * median:
            reasons[(agency, account)] = f"above {factor:g}x the agency median of {median:g}"
    return reasons


def ledger_rows(records: Iterable[AuditRecord]) -> dict[str, list[dict[str, str]]]:
    """Provision rows per district: one per camera of each allowed clip request, playback or thumbnail."""
    ledgers: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in records:
        if r.result != "allowed" or r.action not in PROVISION_ACTIONS:
            continue
        for s in r.subjects:
            ledgers[s.district].append(
                {
                    "time_kst": _kst(r.at),
                    "action": r.action,
                    "agency": r.agency,
                    "account": r.account,
                    "incident": r.incident or "",
                    "purpose": r.purpose,
                    "service": str(r.detail.get("service", "")),
                    "camera_id": s.camera_id,
                    "window_start_kst": _kst(s.start),
                    "window_end_kst": _kst(s.end),
                    "request_id": str(r.detail.get("request_id", "")),
                    "client_ip": r.client_ip,
                }
            )
    return ledgers


def write_report(
    store: Store, month: str, out: Path, factor: float = 3.0, threshold: int | None = None
) -> dict[str, Any]:
    """Write the month's CSV files into `out`; what was written (paths) and how many records were read."""
    start, after = month_bounds(month)
    records, unreadable = _records(store, start.timestamp(), after.timestamp())
    out.mkdir(parents=True, exist_ok=True)
    counts = account_counts(records)
    flags = unusual(counts, factor, threshold)
    accounts = _write_accounts(out / f"review-{month}-accounts.csv", counts, flags)
    agencies = _write_agencies(out / f"review-{month}-agencies.csv", counts, flags)
    ledgers = ledger_rows(records)
    ledger_paths = {
        d: str(_write_csv(out / f"ledger-{month}-{d}.csv", LEDGER_COLUMNS, ledgers.get(d, [])))
        for d in sorted({*DISTRICTS, *ledgers})
    }
    return {
        "month": month,
        "records": len(records),
        "unreadable_records": unreadable,
        "accounts": str(accounts),
        "agencies": str(agencies),
        "ledgers": ledger_paths,
    }


def _records(store: Store, since: float, until: float) -> tuple[list[AuditRecord], int]:
    records, unreadable = [], 0
    for entry in entries(store, since=since, until=until):
        try:
            records.append(entry.record())
        except (ValidationError, KeyError):
            unreadable += 1  # `audit verify` says which and why
    return records, unreadable


def _write_accounts(path: Path, counts: dict[Account, Counts], flags: dict[Account, str]) -> Path:
    rows = [
        {
            "agency": agency,
            "account": account,
            **asdict(c),
            "unusual_volume": flags.get((agency, account), ""),
        }
        for (agency, account), c in counts.items()
    ]
    columns = ("agency", "account", *Counts.__dataclass_fields__, "unusual_volume")
    return _write_csv(path, columns, rows)


def _write_agencies(path: Path, counts: dict[Account, Counts], flags: dict[Account, str]) -> Path:
    totals: dict[str, dict[str, Any]] = {}
    for (agency, account), c in counts.items():
        row = totals.setdefault(
            agency, {"agency": agency, "accounts": 0, **asdict(Counts()), "unusual_accounts": 0}
        )
        row["accounts"] += 1
        for name, value in asdict(c).items():
            row[name] += value
        row["unusual_accounts"] += (agency, account) in flags
    columns = ("agency", "accounts", *Counts.__dataclass_fields__, "unusual_accounts")
    return _write_csv(path, columns, list(totals.values()))


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return path


def _cell(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (purposes and accounts come from users) is quoted."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def _kst(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, KST).isoformat(timespec="seconds")
