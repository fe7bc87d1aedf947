"""The agent's own health, kept in a small JSON file that `cctv-agent healthcheck` reads.

The agent rewrites the file after every liveness round (`health.liveness_interval_s`): whether it is
connected to the broker, and when it last finished observing its cameras (a liveness round) and enumerating
them (a sweep). A container's HEALTHCHECK runs `cctv-agent healthcheck`, which needs no network access and
no port: the file lives in the agent's state directory (a volume), beside the spool.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class AgentHealth:
    pid: int
    written_at: float
    mqtt_problem: str | None  # None while connected to the broker
    last_round_at: float | None  # the end of the last liveness round over every camera
    last_sweep_at: float | None  # the end of the last full enumeration sweep


class HealthFile:
    """Writes the agent's health atomically (a reader never sees half a file)."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self.last_round_at: float | None = None
        self.last_sweep_at: float | None = None

    def swept(self) -> None:
        self.last_sweep_at = self._clock()

    def observed(self, mqtt_problem: str | None) -> None:
        """A liveness round ended: record it and rewrite the file."""
        self.last_round_at = self._clock()
        try:
            self.write(mqtt_problem)
        except OSError as exc:  # a full or read-only state volume: the healthcheck will say so
            log.warning("cannot write the health file %s: %s", self.path, exc)

    def write(self, mqtt_problem: str | None) -> None:
        now = self._clock()
        health = AgentHealth(os.getpid(), now, mqtt_problem, self.last_round_at, self.last_sweep_at)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(asdict(health)))
        tmp.replace(self.path)


def problems(path: Path, max_age_s: float, now: float) -> list[str]:
    """What is wrong with the agent whose health file is `path`; empty when it is healthy: connected, and a
    liveness round and the first sweep done, the round within `max_age_s`."""
    try:
        health = AgentHealth(**json.loads(path.read_text()))
    except FileNotFoundError:
        return [f"{path}: no health file yet (the agent has not finished its first sweep, or is not running)"]
    except (OSError, ValueError, TypeError) as exc:
        return [f"{path}: unreadable health file: {exc}"]
    found = []
    if health.mqtt_problem:
        found.append(health.mqtt_problem)
    if health.last_sweep_at is None:
        found.append("no sweep of the cameras finished yet")
    age = now - (health.last_round_at or health.written_at)
    if health.last_round_at is None or age > max_age_s:
        found.append(f"no liveness round finished in the last {max_age_s:.0f} s (last {age:.0f} s ago)")
    return found
