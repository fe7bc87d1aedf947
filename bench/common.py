"""What every benchmark shares: argument parsing, the machine's description and the closing ratio line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR", Path(__file__).resolve().parent / "results"))


def parser(name: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    p.add_argument("--quick", action="store_true", help="a short run, under a minute")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    return p


def machine() -> str:
    """One line describing where the figures came from."""
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu_model()}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, Python {platform.python_version()}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def current_rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process right now (VmRSS), MiB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_cpu_seconds(pid: int | str) -> float:
    """User + system CPU time of any process so far (from /proc); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as t: ...` then t[0] holds the elapsed wall seconds."""
    holder: list[float] = []
    start = time.perf_counter()
    try:
        yield holder
    finally:
        holder.append(time.perf_counter() - start)


@dataclass
class Report:
    """Figures of one run; `finish` prints them and the closing line `NAME: X vs Y (ratio R)`."""

    name: str
    figures: dict[str, object] = field(default_factory=dict)

    def add(self, key: str, value: object) -> None:
        self.figures[key] = value
        print(f"  {key}: {value}", flush=True)

    def finish(self, ours: str, anchor: str, ratio: float, as_json: bool = False) -> None:
        closing = f"{self.name}: {ours} vs {anchor} (ratio {ratio:.2f})"
        self.figures["ratio"] = round(ratio, 3)
        self.figures["machine"] = machine()
        self.figures["closing"] = closing
        # A short run must not pass for a full one in BENCHMARKS.md (bench.all renders the last results).
        quick = " --quick" if "--quick" in sys.argv else ""
        self.figures["command"] = f"python -m bench.{self.name}{quick}"
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{self.name}.json").write_text(json.dumps(self.figures, indent=2, default=str))
        if as_json:
            print(json.dumps(self.figures, default=str))
        print(closing, flush=True)


def serving_child(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`python ARGS` in a child that prints one JSON line once it serves (closing its stdin stops it)."""
    child = subprocess.Popen(
        [sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"{' '.join(args)} exited before serving")
    served: dict[str, Any] = json.loads(line)
    return child, served
