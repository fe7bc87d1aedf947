"""Turning messages into MQTT (topic, payload, retain, qos) and back, with every check in one place."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import from_json

from contract import topics
from contract.errors import ContractError
from contract.messages import (
    SUPPORTED_VERSIONS,
    AgentState,
    AnyMessage,
    ArmRequest,
    CameraMeta,
    CameraStatus,
    ClipRequest,
    ClipUpdate,
    HealthSnapshot,
    LiveRequest,
    LiveUpdate,
    Message,
)

# A health snapshot of a 20,000-camera district is ~2 MB; everything else is small.
MAX_PAYLOAD_BYTES: dict[topics.TopicKind, int] = {
    "agent_state": 16 * 1024,
    "camera_meta": 64 * 1024,
    "camera_status": 16 * 1024,
    "health": 4 * 1024 * 1024,
    "command": 16 * 1024,
    "clip": 16 * 1024,
    "live": 16 * 1024,
}
_MISSING = object()


@dataclass(frozen=True)
class Delivery:
    """How a message travels: where, retained or not, at which QoS."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


def encode(message: AnyMessage) -> Delivery:
    """The topic, payload and MQTT flags of an outbound message."""
    payload = message.model_dump_json(exclude_none=True).encode()
    d = message.district
    match message:
        case AgentState():
            return Delivery(topics.agent_state(d), payload, retain=True, qos=1)
        case CameraMeta():
            return Delivery(topics.camera_meta(d, message.camera_id), payload, retain=True, qos=1)
        case CameraStatus():
            return Delivery(topics.camera_status(d, message.camera_id), payload, retain=True, qos=1)
        case HealthSnapshot():
            return Delivery(topics.health(d), payload, retain=False, qos=0)
        case ClipRequest():
            return Delivery(topics.command(d, "clip"), payload, retain=False, qos=1)
        case ArmRequest():
            return Delivery(topics.command(d, "arm"), payload, retain=False, qos=1)
        case ClipUpdate():
            return Delivery(topics.clip(d, message.request_id), payload, retain=False, qos=1)
        case LiveRequest():
            return Delivery(topics.command(d, "live"), payload, retain=False, qos=1)
        case LiveUpdate():
            return Delivery(topics.live(d, message.session_id), payload, retain=False, qos=1)
    raise TypeError(f"not a contract message: {type(message).__name__}")


def decode(topic: str, payload: bytes) -> AnyMessage:
    """Validate an inbound message against its topic; ContractError (with a reason) if anything is off, and
    never another exception, whatever the payload: malformed input is counted and dropped, not a crash."""
    ref = topics.parse(topic)
    limit = MAX_PAYLOAD_BYTES[ref.kind]
    if len(payload) > limit:
        raise ContractError("oversized", f"{len(payload)} bytes > {limit} on {ref.kind}")
    model = _model_for(ref)
    try:
        # pydantic's own JSON parser in one step: about twice as fast as json.loads + model_validate.
        message: AnyMessage = model.model_validate_json(payload)  # type: ignore[assignment]
    except ValidationError as exc:
        raise _why_invalid(payload, exc) from None
    if "v" not in message.model_fields_set:  # the model defaults it; the wire must carry it
        raise ContractError("unknown_version", "v is missing")
    _check_matches_topic(ref, message)
    return message


def _why_invalid(payload: bytes, exc: ValidationError) -> ContractError:
    """Name the reason a payload failed validation. It is parsed again with the same parser (jiter) and the
    same rules, only to classify: nothing is accepted here that the validation refused. jiter has its own
    nesting limit, so no payload can reach Python's recursion limit."""
    try:
        data = from_json(payload, allow_inf_nan=False)
    except ValueError as err:  # not UTF-8, not JSON, NaN literals, numbers out of range, nested too deeply
        return ContractError("invalid_json", str(err)[:200])
    if not isinstance(data, dict):
        return ContractError("invalid_json", "payload is not a JSON object")
    version = data.get("v", _MISSING)
    if version is _MISSING:
        return ContractError("unknown_version", "v is missing")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:  # true and 1.0 are no version
        return ContractError("unknown_version", f"v={repr(version)[:40]}")
    return ContractError("invalid_payload", _first_errors(exc))


def _model_for(ref: topics.TopicRef) -> type[Message]:
    match ref.kind:
        case "agent_state":
            return AgentState
        case "camera_meta":
            return CameraMeta
        case "camera_status":
            return CameraStatus
        case "health":
            return HealthSnapshot
        case "command":
            return _COMMAND_MODELS[ref.command or "clip"]
        case "clip":
            return ClipUpdate
        case "live":
            return LiveUpdate


_COMMAND_MODELS: dict[topics.CommandName, type[Message]] = {
    "clip": ClipRequest,
    "arm": ArmRequest,
    "live": LiveRequest,
}


def _check_matches_topic(ref: topics.TopicRef, message: AnyMessage) -> None:
    if message.district != ref.district:
        raise ContractError("district_mismatch", f"payload {message.district!r} on topic {ref.district!r}")
    if ref.camera_id is not None:
        camera_id = getattr(message, "camera_id", None)
        if camera_id != ref.camera_id:
            raise ContractError("topic_mismatch", f"camera {camera_id!r} on topic {ref.camera_id!r}")
    if ref.request_id is not None:
        request_id = getattr(message, "request_id", None)
        if request_id != ref.request_id:
            raise ContractError("topic_mismatch", f"request {request_id!r} on topic {ref.request_id!r}")
    if ref.session_id is not None:
        session_id = getattr(message, "session_id", None)
        if session_id != ref.session_id:
            raise ContractError("topic_mismatch", f"session {session_id!r} on topic {ref.session_id!r}")


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    """The first few errors, short: field names come from the payload and may be long."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        loc = ".".join(str(p)[:40] for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg'][:100]}")
    return "; ".join(parts)
