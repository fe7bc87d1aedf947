"""`cctv-collector broker-acl`: its arguments, exit codes and the files it writes."""

from __future__ import annotations

import base64
import subprocess
import typing
from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub

from collector import cli
from collector.broker_acl import accounts, agent_publishes, passwd_line
from contract import topics
from contract.districts import DISTRICTS

# One topic of each kind an agent publishes. A new kind in contract/topics.py must be added here and granted
# in collector/broker_acl.py, or the production broker refuses agents on it.
SAMPLES = {
    "agent_state": topics.agent_state,
    "camera_meta": lambda d: topics.camera_meta(d, "cam-1"),
    "camera_status": lambda d: topics.camera_status(d, "cam-1"),
    "health": topics.health,
    "clip": lambda d: topics.clip(d, "req-1"),
    "live": lambda d: topics.live(d, "session-1"),
}


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


def test_the_acl_grants_each_agent_every_topic_kind_of_its_own_district_only() -> None:
    kinds = set(typing.get_args(topics.TopicKind)) - {"command"}
    assert kinds <= set(SAMPLES), f"grant {kinds - set(SAMPLES)} in collector/broker_acl.py"
    (collector, mapo, _jung) = accounts(["mapo", "jung"], ["collector-1"])
    for kind, sample in SAMPLES.items():
        own, other = sample("mapo"), sample("jung")
        assert any(topic_matches_sub(f, own) for f in mapo.write), kind
        assert not any(topic_matches_sub(f, other) for f in mapo.write), kind
        assert any(topic_matches_sub(f, other) for f in collector.read), kind
        assert not any(topic_matches_sub(f, own) for f in collector.write), kind
    for name in topics.COMMANDS:
        assert any(topic_matches_sub(f, topics.command("mapo", name)) for f in mapo.read)
        assert not any(topic_matches_sub(f, topics.command("jung", name)) for f in mapo.read)
        assert not any(topic_matches_sub(f, topics.command("mapo", name)) for f in mapo.write)
        assert any(topic_matches_sub(f, topics.command("jung", name)) for f in collector.write)
    assert agent_publishes("mapo") == list(mapo.write)
