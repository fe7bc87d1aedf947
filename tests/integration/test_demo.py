"""`make demo` is the README's first command: its script brings the whole stack up with three districts around
a district border, and shows what a new user should see: the cameras found across the districts, a 112
centre's incident with the cameras around it, a clip from each district that downloads and decodes, an
agency without rights refused, the audit records, Prometheus' view, and where to look next. Then it stops
everything it started."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DISTRICTS = ("mapo", "seodaemun", "jung")


def test_demo_shows_an_incident_across_three_districts_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_EXIT": "1", "DEMO_DIR": str(tmp_path / "demo")}
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "dev" / "demo.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    sections = _sections(out)

    found = sections["cameras found across districts (cctv-collector cameras):"]
    for district in DISTRICTS:
        assert re.search(rf"^{district}-00001\s+{district}\s", found, re.M), found

    incident = next(body for title, body in sections.items() if title.startswith("a 112 operator"))
    assert "6 cameras in 3 districts (jung, mapo, seodaemun)" in incident
    nearest = [line.split() for line in incident.split("nearest first:", 1)[1].strip().splitlines()]
    assert [row[0] for row in nearest[:3]] == ["mapo-00001", "jung-00001", "seodaemun-00001"]
    assert all(float(row[1]) < 250 and row[2] == "m" for row in nearest)  # all around the scene

    clips = next(body for title, body in sections.items() if title.startswith("a 3 s clip"))
    for district in DISTRICTS:
        assert f"of {district}-00001 ({district}): succeeded" in clips
    assert clips.count("manifest verified: True") == 3
    played = [int(n) for n in re.findall(r"decoded (\d+) frames of h264", clips)]
    assert len(played) == 3 and all(n > 50 for n in played), clips  # 3 s at 25 fps, from a keyframe
    assert clips.count("X-Amz-Signature=") == 3  # the presigned URLs it played

    refused = next(body for title, body in sections.items() if title.startswith("the 119 centre"))
    assert "refused: HTTP 403 not_own_incident" in refused

    audit = next(body for title, body in sections.items() if title.startswith("the audit records"))
    actions = [line.split()[5:7] for line in audit.strip().splitlines()]
    assert actions.count(["clip.request", "allowed"]) == 3
    assert actions.count(["clip.playback", "allowed"]) == 3
    assert ["incident.read", "refused"] in actions  # the 119 centre's attempt is on record too
    assert "audit chain OK" in sections["the audit chain (cctv-collector audit verify):"]

    prometheus = next(body for title, body in sections.items() if title.startswith("what Prometheus saw"))
    assert "agency=police-112 outcome=succeeded  3" in prometheus
    assert "agency=fire-119 outcome=refused  1" in prometheus
    for district in DISTRICTS:
        assert f"district={district} outcome=delivered  1" in prometheus

    look = sections["where to look"]
    assert re.search(r"API docs\s+http://127\.0\.0\.1:\d+/v1/docs .*/v1/openapi\.json", look)
    assert re.search(r"metrics\s+http://127\.0\.0\.1:\d+/metrics", look)
    assert re.search(r"Prometheus\s+http://127\.0\.0\.1:\d+/graph", look)
    assert re.search(r"export TOKEN=ey[\w-]+\.[\w-]+\.[\w-]+", look)
    assert _nothing_left_running(tmp_path / "demo")


def _sections(out: str) -> dict[str, str]:
    """The demo's output by its `== title` lines."""
    parts = re.split(r"^== (.+)$", out, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _nothing_left_running(directory: Path) -> bool:
    """The demo stops what it started: no process still names its directory."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return str(directory) not in ps
