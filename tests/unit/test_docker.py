"""The container images without a Docker engine: hadolint, the image policy (pinned base, multi-stage,
non-root user, a healthcheck that is a real command, no secrets in layers, state on volumes), and the build
context that .dockerignore lets through."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from agent.config import AgentSettings
from collector.config import CollectorSettings
from collector.index.store_sqlite import sqlite_path

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"Dockerfile.agent": "cctv-agent", "Dockerfile.collector": "cctv-collector"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE", re.IGNORECASE)
PINNED_BASE = re.compile(r"^python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?$")


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int  # 0 = before the first FROM


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    logical = re.sub(r"\\\n", " ", "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    result, stage = [], 0
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        stage += keyword.upper() == "FROM"
        result.append(Instruction(keyword.upper(), " ".join(args.split()), stage))
    return result


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


@pytest.fixture(params=sorted(IMAGES))
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return ROOT / request.param


def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_base_image_is_pinned_and_never_latest(dockerfile: Path) -> None:
    instructions = parse(dockerfile)
    args = dict(i.args.split("=", 1) for i in instructions if i.keyword == "ARG" and "=" in i.args)
    froms = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: wheels are built apart from the runtime"
    for image in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert PINNED_BASE.fullmatch(resolved), f"{image} -> {resolved} is not pinned to a patch version"
    assert "latest" not in dockerfile.read_text()
    assert "--build-arg PYTHON_IMAGE=" in dockerfile.read_text(), "the digest pinning is documented"


def test_the_runtime_installs_only_wheels_and_copies_no_source(dockerfile: Path) -> None:
    runtime = final_stage(parse(dockerfile))
    assert not [i for i in runtime if i.keyword in ("COPY", "ADD")], "sources stay in the wheel stage"
    (install,) = [i for i in runtime if i.keyword == "RUN" and "pip install" in i.args]
    assert "--no-index" in install.args and "from=wheels" in install.args


def test_the_process_runs_as_a_non_root_user(dockerfile: Path) -> None:
    users = [i.args for i in final_stage(parse(dockerfile)) if i.keyword == "USER"]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {users[-1]}: numeric and not a system account"


def test_the_healthcheck_is_the_images_own_command(dockerfile: Path) -> None:
    runtime = final_stage(parse(dockerfile))
    (check,) = [i.args for i in runtime if i.keyword == "HEALTHCHECK"]
    exec_form = re.search(r"CMD (\[.*\])", check)
    assert exec_form, "HEALTHCHECK CMD in exec form"
    argv = json.loads(exec_form.group(1))
    program = IMAGES[dockerfile.name]
    assert argv[:2] == [program, "healthcheck"]
    (cmd,) = [i.args for i in runtime if i.keyword == "CMD"]
    assert argv[-1] == json.loads(cmd)[-1], "the healthcheck reads the configuration the process runs with"
    module = "agent.cli" if program == "cctv-agent" else "collector.cli"
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "healthcheck", "--help"], capture_output=True, check=False
    )
    assert done.returncode == 0


def test_no_secret_is_baked_into_a_layer(dockerfile: Path) -> None:
    for i in parse(dockerfile):
        if i.keyword in ("ENV", "ARG", "LABEL"):
            names = [pair.split("=")[0] for pair in i.args.split()]
            assert not [n for n in names if SECRET_NAME.search(n) and not n.endswith("_FILE")], i.args
        if i.keyword in ("COPY", "ADD"):
            assert not re.search(r"secret|\.key\b|\.pem\b|\.env\b", i.args, re.IGNORECASE), i.args


def test_state_lives_on_the_declared_volume() -> None:
    """The default paths the processes write to are inside each image's VOLUME (the rest can be read-only)."""
    agent = AgentSettings(district="mapo", agent_id="m", ledger=Path("l.csv"))
    collector = CollectorSettings()
    written = {
        "Dockerfile.agent": [agent.clips.spool_dir, agent.clips.key_file, agent.status_file],
        "Dockerfile.collector": [
            Path(sqlite_path(collector.store.url)),
            collector.command_key_file,
            collector.audit.key_path,
        ],
    }
    for name, paths in written.items():
        volumes = [i.args for i in parse(ROOT / name) if i.keyword == "VOLUME"]
        (volume,) = [PurePosixPath(v) for v in json.loads(volumes[0])]
        for path in paths:
            assert PurePosixPath(path).is_relative_to(volume), f"{name}: {path} is not on {volume}"


# The build context, as Docker computes it from .dockerignore (moby/patternmatcher: the last matching
# pattern wins; a pattern matches a path or any of its parent directories).


def _pattern(text: str) -> re.Pattern[str]:
    text, out, i = text.strip().strip("/"), "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        elif text[i] == "[":
            end = text.index("]", i)
            out, i = out + text[i : end + 1], end + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out)


def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [(p.startswith("!"), _pattern(p.lstrip("!"))) for p in patterns]


def sent(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            excluded = not negated
    return not excluded


def test_the_build_context_holds_what_the_images_copy_and_nothing_else() -> None:
    rules = _rules()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    context = [p for p in tracked.stdout.splitlines() if sent(p, rules)]
    for name in IMAGES:
        for i in parse(ROOT / name):
            if i.keyword == "COPY" and "--from" not in i.args:
                for source in i.args.split()[:-1]:
                    assert any(p == source or p.startswith(f"{source}/") for p in context), (
                        f"{name}: {source}"
                    )
    tops = {PurePosixPath(p).parts[0] for p in context}
    assert tops == {"pyproject.toml", "README.md", "LICENSE", "contract", "common", "agent", "collector",
                    "camsim", "firmware-configs"}  # fmt: skip
    assert "collector/index/migrations" in "\n".join(context), "package data is sent"


@pytest.mark.parametrize(
    "path",
    [".git/config", ".venv/bin/python", "tests/contract/golden/clip_request.json", "bench/clips.py",
     "deploy/mosquitto/passwd", "secrets/mqtt/agent-mapo", "agent/secrets/agent-mapo", ".env", "agent/.env",
     "agent/__pycache__/app.cpython-311.pyc", "collector/commands.key", "agent/clips/test.pem",
     "common/ca.crt", "collector/index.db", "var/lib/cctv-collector/index.db", "pid", ".mypy_cache/x"],
)  # fmt: skip
def test_the_build_context_never_sends(path: str) -> None:
    assert not sent(path, _rules())
