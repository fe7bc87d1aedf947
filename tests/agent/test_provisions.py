"""The provision ledger on disk and `cctv-agent ledger export`: one row per clip handed over, by time."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.cli import main
from agent.provisions import COLUMNS, ProvisionLedger, ledger_path
from contract.messages import ClipRequest

T0 = datetime(2026, 11, 30, 23, 59, 59, 999_000, tzinfo=UTC)


def request(request_id: str) -> ClipRequest:
    return ClipRequest(district="gangnam", request_id=request_id, camera_id="gangnam-00001", start=T0,
                       end=T0 + timedelta(seconds=30), purpose="missing child, last seen at the gate",
                       agency="vulnerable-support", incident="VS-2026-0091", requested_by="officer, kim",
                       sent_at=T0, service="vulnerable")  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    spool.mkdir()
    path = tmp_path / "agent.toml"
    path.write_text(f'district = "gangnam"\nagent_id = "a1"\nledger = "{tmp_path / "ledger.csv"}"\n'
                    f'[clips]\nspool_dir = "{spool}"\n')  # fmt: skip
    return path


def record(spool: Path, request_id: str, at: datetime) -> None:
    ledger = ProvisionLedger(ledger_path(spool))
    try:
        ledger.record(request(request_id), object_key=f"gangnam/{request_id}.mp4", sha256="ab" * 32,
                      size_bytes=1234, covered=(T0, T0 + timedelta(seconds=29)), at=at)  # fmt: skip
    finally:
        ledger.close()


def export(config: Path, *args: str) -> tuple[int, list[dict[str, str]]]:
    out = config.parent / "out.csv"
    code = main(["ledger", "export", "--config", str(config), "--out", str(out), *args])
    if code != 0:
        return code, []
    with out.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return code, list(reader)


def test_each_clip_handed_over_is_one_row_and_the_export_filters_by_time(config: Path) -> None:
    spool = config.parent / "spool"
    record(spool, "req-november", T0)
    record(spool, "req-december", T0 + timedelta(hours=1))
    record(spool, "req-december", T0 + timedelta(hours=2))  # the result delivered again after a crash
    code, rows = export(config)
    assert code == 0
    assert [r["request_id"] for r in rows] == ["req-november", "req-december"]
    assert rows[0]["requested_by"] == "officer, kim"  # quoted, not split
    assert rows[0]["handed_over_at"] == "2026-11-30T23:59:59.999000Z"
    assert (rows[0]["service"], rows[0]["incident"], rows[0]["window_end"]) == (
        "vulnerable", "VS-2026-0091", "2026-12-01T00:00:29.999000Z",
    )  # fmt: skip
    assert [r["request_id"] for r in export(config, "--since", "2026-12-01")[1]] == ["req-december"]
    assert [r["request_id"] for r in export(config, "--until", "2026-12-01T09:00:00+09:00")[1]] == [
        "req-november"
    ]


def test_export_without_a_ledger_fails_and_a_bad_time_is_a_usage_error(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(config)[0] == 1
    assert "no provision ledger" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["ledger", "export", "--config", str(config), "--since", "last tuesday"])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as help_:
        main(["ledger", "export", "--help"])
    assert help_.value.code == 0
    assert "--since" in capsys.readouterr().out
