"""`make demo` is the README's first command: its script brings the whole stack up, shows the cameras, and a
112 operator's incident with the cameras around it and a clip to play."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_the_cameras_and_an_operators_clip(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_EXIT": "1", "DEMO_DIR": str(tmp_path / "demo")}
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "dev" / "demo.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table, incident = done.stdout.split("cctv-collector cameras):", 1)[1].split("== a 112 operator", 1)
    for camera in ("gangnam-00001", "gangnam-00002", "gangnam-00003"):
        assert camera in table
    assert "offline" in table  # the camera the demo switches off
    assert "unreachable" in table
    nearest = incident.split("nearest first:", 1)[1].splitlines()[1]
    assert nearest.split()[:3] == ["gangnam-00002", "0.0", "m"]  # the incident is at its place
    assert "clip clip-" in incident and "gangnam-00002: succeeded" in incident
    assert "manifest verified: True" in incident
    assert "X-Amz-Signature=" in incident.split("play it until", 1)[1]  # the presigned URL
    assert "audit chain OK" in incident
    # The console's address and a token for each kind of user, ready to paste.
    assert re.search(r"operator's console: http://127\.0\.0\.1:\d+/ ", done.stdout)
    assert done.stdout.count("\n    eyJ") == 3
    assert _nothing_left_running(tmp_path / "demo")


def _nothing_left_running(directory: Path) -> bool:
    """The demo stops what it started: no process still names its directory."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return str(directory) not in ps
