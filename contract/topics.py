"""The only place a topic string is built or taken apart.

Topic space (version 1):

    cctv/v1/{district}/agent/state                 retained; the agent's MQTT last will says offline
    cctv/v1/{district}/camera/{camera_id}/meta     retained, published on change
    cctv/v1/{district}/camera/{camera_id}/status   retained, published on change
    cctv/v1/{district}/health                      periodic batched snapshot of every camera
    cctv/v1/{district}/cmd/{command}               collector -> agent, QoS 1 (clip, arm, live)
    cctv/v1/{district}/clip/{request_id}           agent -> collector progress and result, QoS 1
    cctv/v1/{district}/live/{session_id}           agent -> collector live session state and segments, QoS 1
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from contract.errors import ContractError

ROOT = "cctv/v1"

TopicKind = Literal["agent_state", "camera_meta", "camera_status", "health", "command", "clip", "live"]
CommandName = Literal["clip", "arm", "live"]
COMMANDS: tuple[CommandName, ...] = ("clip", "arm", "live")

# Slugs and ids are used as topic levels: no '/', '+', '#', no spaces, bounded length.
DISTRICT_PATTERN = r"^[a-z][a-z0-9-]{1,31}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_DISTRICT_RE = re.compile(DISTRICT_PATTERN)
_ID_RE = re.compile(ID_PATTERN)


@dataclass(frozen=True)
class TopicRef:
    """What a topic names: its kind and the ids in it."""

    kind: TopicKind
    district: str
    camera_id: str | None = None
    request_id: str | None = None
    command: CommandName | None = None
    session_id: str | None = None


def _district(district: str) -> str:
    if not _DISTRICT_RE.fullmatch(district):
        raise ValueError(f"not a district slug: {district!r}")
    return district


def _ident(value: str, what: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"not a valid {what}: {value!r}")
    return value


def agent_state(district: str) -> str:
    return f"{ROOT}/{_district(district)}/agent/state"


def camera_meta(district: str, camera_id: str) -> str:
    return f"{ROOT}/{_district(district)}/camera/{_ident(camera_id, 'camera id')}/meta"


def camera_status(district: str, camera_id: str) -> str:
    return f"{ROOT}/{_district(district)}/camera/{_ident(camera_id, 'camera id')}/status"


def health(district: str) -> str:
    return f"{ROOT}/{_district(district)}/health"


def command(district: str, name: CommandName) -> str:
    if name not in COMMANDS:
        raise ValueError(f"unknown command: {name!r}")
    return f"{ROOT}/{_district(district)}/cmd/{name}"


def clip(district: str, request_id: str) -> str:
    return f"{ROOT}/{_district(district)}/clip/{_ident(request_id, 'request id')}"


def live(district: str, session_id: str) -> str:
    return f"{ROOT}/{_district(district)}/live/{_ident(session_id, 'session id')}"


def commands_filter(district: str) -> str:
    """What an agent subscribes to: every command for its district."""
    return f"{ROOT}/{_district(district)}/cmd/+"


def telemetry_filters(district: str = "+") -> list[str]:
    """What a collector subscribes to: everything agents publish (all districts by default)."""
    d = district if district == "+" else _district(district)
    return [
        f"{ROOT}/{d}/agent/state",
        f"{ROOT}/{d}/camera/+/meta",
        f"{ROOT}/{d}/camera/+/status",
        f"{ROOT}/{d}/health",
        f"{ROOT}/{d}/clip/+",
    ]


def live_filter(district: str = "+") -> str:
    """Live session updates, followed apart from telemetry: they are latency-bound, not batched."""
    d = district if district == "+" else _district(district)
    return f"{ROOT}/{d}/live/+"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription: the broker spreads messages over the group's members."""
    _ident(group, "share group")
    return f"$share/{group}/{topic_filter}"


def parse(topic: str) -> TopicRef:
    """Take a topic apart; ContractError('unknown_topic') if it is not one of ours."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != ROOT or not _DISTRICT_RE.fullmatch(parts[2]):
        raise ContractError("unknown_topic", topic[:200])
    district, rest = parts[2], parts[3:]
    ref = _parse_rest(district, rest)
    if ref is None:
        raise ContractError("unknown_topic", topic[:200])
    return ref


def _parse_rest(district: str, rest: list[str]) -> TopicRef | None:
    if rest == ["agent", "state"]:
        return TopicRef("agent_state", district)
    if rest == ["health"]:
        return TopicRef("health", district)
    if len(rest) == 3 and rest[0] == "camera" and _ID_RE.fullmatch(rest[1]) and rest[2] in ("meta", "status"):
        kind: TopicKind = "camera_meta" if rest[2] == "meta" else "camera_status"
        return TopicRef(kind, district, camera_id=rest[1])
    if len(rest) == 2 and rest[0] == "cmd":
        for name in COMMANDS:
            if rest[1] == name:
                return TopicRef("command", district, command=name)
        return None
    if len(rest) == 2 and rest[0] == "clip" and _ID_RE.fullmatch(rest[1]):
        return TopicRef("clip", district, request_id=rest[1])
    if len(rest) == 2 and rest[0] == "live" and _ID_RE.fullmatch(rest[1]):
        return TopicRef("live", district, session_id=rest[1])
    return None
