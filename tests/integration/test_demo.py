"""`make demo` is the README's first command: its script brings the whole stack up and shows the cameras."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_the_simulated_cameras_in_the_collector(tmp_path: Path) -> None:
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
    table = done.stdout.split("cctv-collector cameras):", 1)[1]
    for camera in ("gangnam-00001", "gangnam-00002", "gangnam-00003"):
        assert camera in table
    assert "offline" in table  # the camera the demo switches off
    assert "unreachable" in table
    assert _nothing_left_running(tmp_path / "demo")


def _nothing_left_running(directory: Path) -> bool:
    """The demo stops what it started: no process still names its directory."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return str(directory) not in ps
