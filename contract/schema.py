"""Writes the contract's JSON Schemas (one file per message, and the manifest) for other platform systems.

python -m contract.schema --out docs/contract
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import BaseModel

from contract.manifest import Manifest
from contract.messages import (
    AgentState,
    ArmRequest,
    CameraMeta,
    CameraStatus,
    ClipRequest,
    ClipUpdate,
    HealthSnapshot,
    LiveRequest,
    LiveUpdate,
)

SCHEMAS: dict[str, type[BaseModel]] = {
    "agent_state": AgentState,
    "camera_meta": CameraMeta,
    "camera_status": CameraStatus,
    "health_snapshot": HealthSnapshot,
    "clip_request": ClipRequest,
    "arm_request": ArmRequest,
    "clip_update": ClipUpdate,
    "live_request": LiveRequest,
    "live_update": LiveUpdate,
    "manifest": Manifest,  # not a message: the signed JSON object stored next to each clip in S3
}


def render() -> dict[str, str]:
    """File name -> JSON text of every schema, deterministic so the committed files can be checked."""
    files = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://cctv.seoul.example/contract/v1/{name}.json"
        files[f"{name}.json"] = json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contract.schema", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/contract"), help="output directory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
