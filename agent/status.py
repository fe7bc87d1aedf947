"""Turns what the agent observed about a camera into its contract state and reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.errors import CameraError
from contract.messages import CameraState


@dataclass
class Observation:
    """The latest facts about one camera, from enumeration, liveness and stream checks."""

    error: CameraError | None = None
    auth_error: CameraError | None = None  # credentials rejected; kept while the camera is unreachable
    clock_offset_s: float | None = None
    image_faults: list[str] = field(default_factory=list)  # "image_black", "image_frozen", ...
    firmware_below_minimum: bool = False
    sub_stream_only: bool = False  # no stream better than SUB_STREAM_MAX_PIXELS: evidence would be poor
    enumerated: bool = False


def evaluate(obs: Observation, clock_skew_limit_s: float) -> tuple[CameraState, list[str], str | None]:
    """(state, reasons, last_error). Reasons are stable slugs a dashboard can group by."""
    if obs.error is not None:
        if obs.error.kind == "unauthorized":
            return "unauthorized", ["credentials_rejected"], obs.error.message
        return "offline", [obs.error.kind], obs.error.message
    if not obs.enumerated:
        return "unknown", [], None
    reasons = list(obs.image_faults)
    if obs.clock_offset_s is not None and abs(obs.clock_offset_s) > clock_skew_limit_s:
        reasons.append("clock_skew")
    if obs.firmware_below_minimum:
        reasons.append("firmware_below_minimum")
    if obs.sub_stream_only:
        reasons.append("sub_stream_only")
    return ("degraded" if reasons else "online"), sorted(reasons), None
