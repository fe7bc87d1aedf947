"""The agent's error taxonomy: what went wrong with a camera decides what the agent does next.

- `unreachable`, `timeout`: transient; retry with capped, jittered backoff; camera is offline meanwhile.
- `unauthorized`: a person must fix the credentials; stop retrying that camera until the ledger changes.
- `protocol`: the camera answered something we cannot use (bad XML, unexpected fault); retry later.
- `hostile`: entity expansion, external entities, oversized answers; counted and contained to that camera.
"""

from __future__ import annotations

from typing import Literal

CameraErrorKind = Literal["unreachable", "timeout", "unauthorized", "protocol", "hostile"]


class AgentError(Exception):
    """Base of the agent's own errors."""


class CameraError(AgentError):
    """Talking to one camera failed; `kind` says how, the message is safe to log (no address, no secret)."""

    def __init__(self, kind: CameraErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: CameraErrorKind = kind
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.kind != "unauthorized"
