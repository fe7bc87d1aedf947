"""`audit report`: a synthetic November reviewed per agency and account; each district's provision ledger."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from collector.audit.chain import AuditSubject, append
from collector.cli import main
from collector.index.store import Store
from tests.collector.audit_helpers import KST, record


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=KST)  # 2026-11-02 is a Monday


WINDOW = (at(3, 9, 50).timestamp(), at(3, 9, 51).timestamp())
NOVEMBER = [
    # officer-1: twelve ordinary weekday accesses, 3x above the median of its agency's accounts
    *(
        record(at=at(2 + i % 5, 10, i), account="officer-1", action="cameras.nearby", subjects=[])
        for i in range(12)
    ),
    # officer-2: 23:30 on a Wednesday and 14:00 on a Saturday are off-hours
    record(at=at(4, 23, 30), account="officer-2", action="cameras.nearby", subjects=[]),
    record(at=at(7, 14), account="officer-2", action="cameras.nearby", subjects=[]),
    # officer-3: 06:59 is off-hours, 07:00 and 21:59 are not; one refusal, which is no access
    record(at=at(5, 6, 59), account="officer-3", action="incident.open", subjects=[]),
    record(at=at(5, 7, 0), account="officer-3", action="incident.update", subjects=[]),
    record(
        at=at(5, 21, 59), account="officer-3", action="clip.request", result="refused", code="outside_grant"
    ),
    # the first minute of November in Korea (still October in UTC) belongs to the month
    record(
        at=at(1, 0, 0),
        account="officer-3",
        action="clip.request",
        incident="112-2026-1101",
        purpose="assault, suspect fled",
        subjects=[AuditSubject(camera_id="gn-7", district="gangnam", start=WINDOW[0], end=WINDOW[1])],
        detail={"service": "112-video", "request_id": "req-1"},
    ),
    # fire-119 plays back footage of two districts
    record(
        at=at(3, 9, 55),
        agency="fire-119",
        account="=HYPERLINK(1)",
        action="clip.playback",
        incident="119-88",
        purpose="building fire",
        subjects=[
            AuditSubject(camera_id="gn-1", district="gangnam", start=WINDOW[0], end=WINDOW[1]),
            AuditSubject(camera_id="mp-2", district="mapo", start=WINDOW[0], end=WINDOW[1]),
        ],
        detail={"service": "119-dispatch", "request_id": "req-2"},
    ),
]
OUTSIDE = [record(at=at(31, 23, 59, month=10)), record(at=at(1, 0, 0, month=12))]


@pytest.fixture
def november(store: Store) -> Store:
    for r in [OUTSIDE[0], *NOVEMBER, OUTSIDE[1]]:
        with store.transaction() as tx:
            append(tx, r)
    return store


def read_csv(path: str) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_monthly_review_and_provision_ledgers(
    november: Store,
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLLECTOR__STORE__URL", store_url)

    assert main(["audit", "report", "--month", "2026-11", "--out", str(tmp_path / "review")]) == 0
    written = json.loads(capsys.readouterr().out)

    assert (written["records"], written["unreadable_records"]) == (len(NOVEMBER), 0)
    fields = ("agency", "account", "accesses", "refusals", "errors", "off_hours_accesses", "unusual_volume")
    assert [tuple(r[f] for f in fields) for r in read_csv(written["accounts"])] == [
        ("fire-119", "'=HYPERLINK(1)", "1", "0", "0", "0", ""),
        ("police-112", "officer-1", "12", "0", "0", "0", "above 3x the agency median of 3"),
        ("police-112", "officer-2", "2", "0", "0", "2", ""),
        ("police-112", "officer-3", "3", "1", "0", "2", ""),
    ]
    agencies = read_csv(written["agencies"])
    assert [(r["agency"], r["accounts"], r["accesses"], r["unusual_accounts"]) for r in agencies] == [
        ("fire-119", "1", "1", "0"),
        ("police-112", "3", "17", "1"),
    ]
    assert len(written["ledgers"]) == 25
    gangnam = read_csv(written["ledgers"]["gangnam"])
    assert [(r["action"], r["agency"], r["incident"], r["camera_id"]) for r in gangnam] == [
        ("clip.request", "police-112", "112-2026-1101", "gn-7"),
        ("clip.playback", "fire-119", "119-88", "gn-1"),
    ]
    assert gangnam[0] == {
        "time_kst": "2026-11-01T00:00:00+09:00", "action": "clip.request", "agency": "police-112",
        "account": "officer-3", "incident": "112-2026-1101", "purpose": "assault, suspect fled",
        "service": "112-video", "camera_id": "gn-7", "window_start_kst": "2026-11-03T09:50:00+09:00",
        "window_end_kst": "2026-11-03T09:51:00+09:00", "request_id": "req-1", "client_ip": "10.1.2.3",
    }  # fmt: skip
    assert [r["camera_id"] for r in read_csv(written["ledgers"]["mapo"])] == ["mp-2"]
    assert read_csv(written["ledgers"]["jongno"]) == []  # nothing provided: a header only


def test_a_month_that_is_not_one_is_a_usage_error(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTOR__STORE__URL", store_url)

    assert main(["audit", "report", "--month", "2026-13", "--out", str(tmp_path)]) == 2
    assert "expected YYYY-MM" in capsys.readouterr().err
