"""Availability from status history: per camera and per district over a window such as the last 7 days.

Definition (also in docs/collector.md): a camera is *available* while its state is `online` or `degraded`
(degraded still delivers video). Time before its first known transition and time in state `unknown` are
*unobserved* and left out: availability = available time / observed time. `coverage` says how much of the
window was observed, so a camera seen for one hour is not mistaken for one seen all week. The district figure
weighs cameras by observed time (sum of available / sum of observed). While the district's agent was offline
(its last will or its goodbye), its cameras were unobserved: their state is taken as `unknown` until the agent
is back.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from itertools import groupby
from typing import Any

from collector.index.store import AVAILABLE_STATES, Store, Transition

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'7d' -> 604800.0; units s, m, h, d, w."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration like 30m, 24h or 7d: {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class Availability:
    camera_id: str  # "*" for a district total
    district: str
    available_s: float
    observed_s: float
    window_s: float

    @property
    def availability(self) -> float | None:
        return self.available_s / self.observed_s if self.observed_s > 0 else None

    @property
    def coverage(self) -> float:
        return self.observed_s / self.window_s if self.window_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["availability"] = None if self.availability is None else round(self.availability, 6)
        out["coverage"] = round(self.coverage, 6)
        return out


def camera_availability(
    camera_id: str, district: str, history: list[Transition], since: float, until: float
) -> Availability:
    """Availability of one camera from its transitions (sorted by time), clipped to [since, until]."""
    available = observed = 0.0
    for current, following in zip(history, [*history[1:], None], strict=True):
        start = max(current.at, since)
        end = min(following.at if following else until, until)
        if end <= start or current.state == "unknown":
            continue
        observed += end - start
        if current.state in AVAILABLE_STATES:
            available += end - start
    return Availability(camera_id, district, available, observed, until - since)


def as_seen(history: list[Transition], presence: list[tuple[float, str]]) -> list[Transition]:
    """A camera's transitions with its agent's presence laid over them: while the agent was offline the state
    is `unknown` (nobody reported it); once the agent is back, the last reported state holds again."""
    if not history:
        return []
    camera_id, district = history[0].camera_id, history[0].district
    events = sorted(
        [(t.at, "camera", t.state) for t in history] + [(at, "agent", state) for at, state in presence]
    )
    seen: list[Transition] = []
    reported: str | None = None
    agent_offline = False
    for at, source, state in events:
        if source == "camera":
            reported = state
        else:
            agent_offline = state == "offline"
        shown = "unknown" if agent_offline else reported
        if shown is not None and (not seen or seen[-1].state != shown):
            seen.append(Transition(camera_id, district, shown, at))
    return seen


def district_total(district: str, cameras: list[Availability], since: float, until: float) -> Availability:
    return Availability(
        "*", district, sum(c.available_s for c in cameras), sum(c.observed_s for c in cameras), until - since
    )


def report(
    store: Store, district: str, since: float, until: float, camera_id: str | None = None
) -> tuple[list[Availability], Availability]:
    """Per-camera availability and the district total for the window [since, until]."""
    transitions = store.history(district, since, until, camera_id)
    presence = store.presence(district, since, until)
    cameras = [
        camera_availability(cam, district, as_seen(list(rows), presence), since, until)
        for cam, rows in groupby(
            sorted(transitions, key=lambda t: (t.camera_id, t.at)), key=lambda t: t.camera_id
        )
    ]
    return cameras, district_total(district, cameras, since, until)


def format_table(cameras: list[Availability], total: Availability) -> str:
    lines = [f"{'camera':<28} {'availability':>12} {'coverage':>9} {'observed_h':>10}"]
    for row in [*cameras, total]:
        avail = "-" if row.availability is None else f"{row.availability * 100:.2f}%"
        name = f"{row.district} (all)" if row.camera_id == "*" else row.camera_id
        lines.append(f"{name:<28} {avail:>12} {row.coverage * 100:>8.1f}% {row.observed_s / 3600:>10.1f}")
    return "\n".join(lines)
