"""Camera positions in, agent ledger and secrets out.

The positions CSV (`district,lat,lon,count,address`, see camsim/data/README.md) says where cameras stand.
The agent's ledger CSV says which cameras a district owns and where to reach them; it names credentials
only by reference (`cam/<camera_id>`) because a ledger travels further than a secrets file.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.ledger import COLUMNS
from camsim.model import CameraSpec

BUNDLED_POSITIONS = Path(__file__).with_name("data") / "seoul_cctv.csv"
# The agent reads what the simulator writes: one column list for both.
LEDGER_COLUMNS = COLUMNS


@dataclass(frozen=True)
class Position:
    """Where one camera stands (one row of the positions CSV, one per camera after expansion)."""

    lat: float
    lon: float
    address: str


def read_positions(district_korean: str, path: Path | None = None) -> list[Position]:
    """The district's rows in file order, each repeated `count` times (several cameras per pole)."""
    out: list[Position] = []
    with (path or BUNDLED_POSITIONS).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["district"] != district_korean:
                continue
            pos = Position(float(row["lat"]), float(row["lon"]), row["address"])
            out.extend([pos] * max(1, int(row.get("count") or 1)))
    return out


def cameras_per_district(path: Path | None = None) -> dict[str, int]:
    """Korean district name -> cameras in the positions CSV (sum of `count`)."""
    totals: dict[str, int] = {}
    with (path or BUNDLED_POSITIONS).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            totals[row["district"]] = totals.get(row["district"], 0) + max(1, int(row.get("count") or 1))
    return totals


def credentials_ref(camera_id: str) -> str:
    return f"cam/{camera_id}"


def ledger_rows(specs: Iterable[CameraSpec]) -> list[dict[str, str]]:
    return [
        {
            "camera_id": s.camera_id,
            "name": s.name,
            "address_text": s.address_text,
            "lat": f"{s.lat:.6f}",
            "lon": f"{s.lon:.6f}",
            "host": s.host,
            "onvif_port": str(s.onvif_port),
            "rtsp_port": str(s.rtsp_port),
            "vendor_hint": s.personality.manufacturer,
            "credentials_ref": credentials_ref(s.camera_id),
            "recorder": s.recorder,
        }
        for s in specs
    ]


def write_ledger(specs: Sequence[CameraSpec], path: Path) -> None:
    """Write the agent's camera ledger CSV (never a password)."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(ledger_rows(specs))


def read_ledger(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX for control characters).
    return json.dumps(value, ensure_ascii=False)


def secrets_toml(specs: Iterable[CameraSpec]) -> str:
    parts = ["# camsim camera credentials: keep private (mode 0600); the ledger refers to these keys.\n"]
    for s in specs:
        parts.append(
            f"\n[credentials.{_toml_str(credentials_ref(s.camera_id))}]\n"
            f"username = {_toml_str(s.username)}\npassword = {_toml_str(s.password)}\n"
        )
    return "".join(parts)


def write_secrets(specs: Sequence[CameraSpec], path: Path) -> None:
    """Write the TOML secrets file with mode 0600 from the first byte (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".secrets-", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets_toml(specs))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    os.chmod(path, 0o600)
