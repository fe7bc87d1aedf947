"""The district's camera ledger (CSV): the base inventory of cameras, without credentials.

A malformed row is reported with file, line and field, and skipped; the rest of the ledger loads.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contract.topics import ID_PATTERN

log = logging.getLogger(__name__)

COLUMNS = (
    "camera_id",
    "name",
    "address_text",
    "lat",
    "lon",
    "host",
    "onvif_port",
    "rtsp_port",
    "vendor_hint",
    "credentials_ref",
    "recorder",
)


class LedgerCamera(BaseModel):
    """One camera as the district knows it. `host` is sensitive: it never leaves the agent."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    camera_id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    address_text: str = ""
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    host: str = Field(min_length=1, max_length=253)
    onvif_port: int = Field(default=80, ge=1, le=65535)
    rtsp_port: int = Field(default=554, ge=1, le=65535)
    vendor_hint: str = ""
    credentials_ref: str = ""
    recorder: str = ""  # the id (recorders ledger) of the recorder that stores this camera's footage, if any


@dataclass(frozen=True)
class LedgerProblem:
    path: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


def load_ledger(path: Path) -> tuple[list[LedgerCamera], list[LedgerProblem]]:
    """Cameras from a ledger CSV and the problems of the rows that were skipped."""
    cameras: list[LedgerCamera] = []
    problems: list[LedgerProblem] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"camera_id", "host"} - set(reader.fieldnames or ())
        if missing:
            problems.append(LedgerProblem(path, 1, ",".join(sorted(missing)), "required column missing"))
            return cameras, problems
        for row in reader:
            line = reader.line_num
            camera = _parse_row(path, line, row, problems)
            if camera is None:
                continue
            if camera.camera_id in seen:
                problems.append(LedgerProblem(path, line, "camera_id", f"duplicate id {camera.camera_id!r}"))
                continue
            seen.add(camera.camera_id)
            cameras.append(camera)
    for problem in problems:
        log.warning("ledger row skipped: %s", problem)
    return cameras, problems


def _parse_row(
    path: Path, line: int, row: dict[str, str | None], problems: list[LedgerProblem]
) -> LedgerCamera | None:
    values = {key: value for key, value in row.items() if key and value not in (None, "")}
    try:
        return LedgerCamera.model_validate(values)
    except ValidationError as exc:
        for err in exc.errors(include_input=False):
            field = ".".join(str(p) for p in err["loc"]) or "(row)"
            problems.append(LedgerProblem(path, line, field, err["msg"]))
        return None
