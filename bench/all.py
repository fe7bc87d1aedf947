"""Runs every benchmark and writes BENCHMARKS.md: the machine, the command, the figures and the ratio line.

python -m bench.all [--quick] [--only camsim,ingest]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import RESULTS_DIR, machine

BENCHMARKS = [
    "camsim", "discovery", "health", "ingest", "clips", "upload", "nearest", "platform", "golden_time",
    "replay",
    "live",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def last_result(name: str) -> tuple[str, str, dict[str, object]]:
    """A benchmark not run this time: its figures from its last run (bench/results/NAME.json), if any."""
    result_file = RESULTS_DIR / f"{name}.json"
    if not result_file.exists():
        return "", f"{name}: not run yet", {}
    figures = json.loads(result_file.read_text())
    command = str(figures.pop("command", f"python -m bench.{name}"))
    return command, str(figures.pop("closing", f"{name}: (closing line not recorded)")), figures


def run_one(name: str, quick: bool) -> tuple[str, str, dict[str, object]]:
    """(command, closing ratio line, figures) of one benchmark; a missing module is reported, not fatal."""
    if not (ROOT / "bench" / f"{name}.py").exists():
        return "", f"{name}: not written yet", {}
    command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
    shown = "python -m bench." + name + (" --quick" if quick else "")
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    sys.stdout.write(done.stdout)
    lines = [line for line in done.stdout.splitlines() if line.startswith(f"{name}:")]
    closing = lines[-1] if lines else f"{name}: failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    result_file = RESULTS_DIR / f"{name}.json"
    if done.returncode != 0:  # keep the last good figures; the failure is reported in the closing line
        return shown, closing, {}
    figures = json.loads(result_file.read_text()) if result_file.exists() else {}
    figures.pop("closing", None)
    figures["wall_s"] = round(time.monotonic() - started, 1)
    if figures:
        result_file.write_text(json.dumps({**figures, "command": shown, "closing": closing}, indent=2))
    return shown, closing, figures


def method(command: str) -> str:
    """A benchmark's method: its module docstring after the title and usage lines."""
    if not command.startswith("python -m bench."):
        return ""
    doc = importlib.import_module(command.split()[2]).__doc__ or ""
    paragraphs = [p for p in doc.strip().split("\n\n")[1:] if not p.strip().startswith("python -m")]
    return "\n\n".join(paragraphs).strip()


def render(results: list[tuple[str, str, dict[str, object]]]) -> str:
    out = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m bench.all`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine()}.",
        "Each benchmark measures its anchor in the same run; the ratio line is its last line of output.",
        "",
    ]
    for command, closing, figures in results:
        title = closing.split(":", 1)[0]
        out += [f"## {title}", "", f"`{command}`" if command else "", "", "```", closing, "```", ""]
        how = method(command)
        if how:
            out += [how, ""]
        shown = {k: v for k, v in figures.items() if k != "machine"}
        if shown:
            out += ["| figure | value |", "|---|---|"]
            out += [f"| {key} | {value} |" for key, value in shown.items()]
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    selected = [n for n in args.only.split(",") if n] or BENCHMARKS
    results = [run_one(name, args.quick) if name in selected else last_result(name) for name in BENCHMARKS]
    args.out.write_text(render(results), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all("failed" not in closing for _, closing, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
