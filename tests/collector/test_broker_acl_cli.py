"""`cctv-collector broker-acl`: its arguments, exit codes and the files it writes."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from collector import cli
from collector.broker_acl import passwd_line
from contract.districts import DISTRICTS


def test_help_names_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["broker-acl", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for option in ("--districts", "--collectors", "--out", "--passwords-dir", "--passwd-out"):
        assert option in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--districts", "mapo,atlantis"], "unknown district atlantis"),
        (["--districts", "Mapo"], "unknown district Mapo"),
        (["--districts", "mapo,mapo"], "repeated"),
        (["--districts", " , "], "at least one"),
        (["--districts", "mapo", "--collectors", "agent-jung"], "not a collector id"),
        (["--districts", "mapo", "--collectors", "col lector"], "not a collector id"),
        (["--districts", "mapo", "--passwd-out", "x"], "go together"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys) -> None:
    assert cli.main(["broker-acl", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_required_option_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["broker-acl"])
    assert done.value.code == 2


def test_all_districts_get_one_account_each(capsys) -> None:
    assert cli.main(["broker-acl", "--districts", "all", "--collectors", "collector-1,collector-2"]) == 0
    users = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("user ")]
    assert users == ["collector-1", "collector-2", *(f"agent-{d}" for d in DISTRICTS)]


def test_an_unwritable_output_exits_1(tmp_path: Path, capsys) -> None:
    assert cli.main(["broker-acl", "--districts", "mapo", "--out", str(tmp_path / "no" / "acl")]) == 1
    assert "broker-acl:" in capsys.readouterr().err


def test_passwords_are_created_once_then_reused(tmp_path: Path) -> None:
    argv = ["broker-acl", "--districts", "mapo", "--passwords-dir", str(tmp_path / "s"),
            "--passwd-out", str(tmp_path / "passwd"), "--out", str(tmp_path / "acl")]  # fmt: skip
    assert cli.main(argv) == 0
    first = (tmp_path / "s" / "agent-mapo").read_text()
    assert len(first.strip()) >= 40 and (tmp_path / "s" / "agent-mapo").stat().st_mode & 0o077 == 0
    (tmp_path / "s" / "collector-1").write_text("chosen by the operator\n")
    assert cli.main(argv) == 0
    assert (tmp_path / "s" / "agent-mapo").read_text() == first
    assert _verifies(tmp_path / "passwd", "collector-1", "chosen by the operator")
    assert _verifies(tmp_path / "passwd", "agent-mapo", first.strip())


def test_the_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    """Same salt and password: the same line as Mosquitto's own tool."""
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "p"), "agent-mapo", "pw"], check=True)
    theirs = (tmp_path / "p").read_text().strip()
    salt = base64.b64decode(theirs.split("$")[3])
    assert passwd_line("agent-mapo", "pw", salt) == theirs


def _verifies(passwd: Path, account: str, password: str) -> bool:
    line = next(line for line in passwd.read_text().splitlines() if line.startswith(f"{account}:"))
    salt = base64.b64decode(line.split("$")[3])
    return passwd_line(account, password, salt) == line
