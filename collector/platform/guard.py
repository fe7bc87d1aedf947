"""Access on every endpoint: who calls (bearer token, 401), how often (429 with Retry-After, per account and
per agency; a live playlist per session instead), and whether they may (the policy's one decision, 403). A
refusal is audited, in a transaction of its own (the action it refuses never happens); an allowed action is
audited by the route, in the transaction of the action itself (`Caller.audit`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer

from collector.access.decision import CameraPlace, IncidentView, decide
from collector.access.policy import Action, AgencyPolicy
from collector.access.tokens import AuthError, Principal
from collector.audit.chain import AuditRecord, AuditSubject, append
from collector.index.tx import Tx
from collector.platform.context import Platform, platform
from collector.platform.errors import ApiError
from contract.messages import Service

TOKEN_COOKIE = "cctv_token"  # noqa: S105 - a cookie's name: the bearer token as a cookie, for the live playlist only (see `viewer`)
# Declares the scheme in the OpenAPI document; the header itself is read and verified below.
_bearer = HTTPBearer(auto_error=False, description="JWT from the agency's identity provider")


@dataclass(frozen=True)
class Caller:
    """An authenticated, not throttled request: its principal, address and the time it is judged at."""

    p: Platform
    principal: Principal
    client_ip: str
    now: float

    @property
    def agency(self) -> AgencyPolicy | None:
        return self.p.access.policy.agencies.get(self.principal.agency)

    def require(
        self,
        action: Action,
        *,
        incident: IncidentView | None = None,
        camera: CameraPlace | None = None,
        service: Service | None = None,
        district: str | None = None,
        purpose: str = "",
        subjects: Iterable[AuditSubject] = (),
    ) -> None:
        """Go on if the policy allows `action`; else audit the refusal and answer 403 with its code."""
        decision = decide(
            self.p.access.policy,
            self.principal,
            action,
            incident=incident,
            camera=camera,
            service=service,
            district=district,
            now=self.now,
        )
        if decision.allowed:
            return
        incident_id = None if incident is None else incident.incident_id
        record = self.record(action, incident_id, subjects, purpose, result="refused", code=decision.code)
        with self.p.store().transaction() as tx:
            append(tx, record)
        raise ApiError(403, decision.code, decision.reason)

    def record(
        self,
        action: str,
        incident: str | None,
        subjects: Iterable[AuditSubject] = (),
        purpose: str = "",
        *,
        result: str = "allowed",
        code: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> AuditRecord:
        return AuditRecord(
            at=self.now,
            account=self.principal.account,
            agency=self.principal.agency,
            client_ip=self.client_ip,
            action=action,
            purpose=purpose,
            incident=incident,
            subjects=tuple(subjects),
            result=result,
            code=code,
            detail=detail or {},
        )

    def audit(self, tx: Tx, action: str, incident: str | None, **kw: Any) -> None:
        """Record an allowed action in `tx`, the transaction of the action itself."""
        append(tx, self.record(action, incident, **kw))


async def caller(
    request: Request,
    p: Annotated[Platform, Depends(platform)],
    _scheme: Annotated[object, Depends(_bearer)] = None,
) -> Caller:
    """FastAPI dependency of every endpoint but /v1/healthz and the live playlist. Runs on the event loop:
    the rate limiters are plain dictionaries, and one thread changes them. A token whose key may have to be
    fetched (jwks_url) is verified in a worker thread, so that a slow identity provider never stalls the
    loop."""
    principal = await _principal(request, p)
    now = p.clock()
    _refuse_if_throttled(p.access.throttle(principal, now), principal)
    return Caller(p, principal, _client_ip(request), now)


async def viewer(
    request: Request,
    session_id: str,
    p: Annotated[Platform, Depends(platform)],
    _scheme: Annotated[object, Depends(_bearer)] = None,
) -> Caller:
    """`caller` for a live playlist: a player reloads it every segment, so its fetches are limited per
    session (`live.playlist_per_min`), not against the account's rate, which a few live tiles would use up.

    The token may come in the `cctv_token` cookie instead of the header: players outside a browser (ffmpeg,
    VLC) send their extra headers with every request, the presigned segment URLs included, which S3 refuses
    (a request carries one credential); a cookie scoped to `/v1/live/` stays with the API."""
    principal = await _principal(request, p, request.cookies.get(TOKEN_COOKIE))
    now = p.clock()
    key = f"{principal.agency}/{principal.account}/{session_id}"
    _refuse_if_throttled(p.playlist_limiter.hit(key, now), principal)
    return Caller(p, principal, _client_ip(request), now)


async def _principal(request: Request, p: Platform, cookie: str | None = None) -> Principal:
    authorization = request.headers.get("authorization")
    if authorization is None and cookie:
        authorization = f"Bearer {cookie}"
    try:
        if p.access.verifier.blocking:
            return await run_in_threadpool(p.access.authenticate, authorization)
        return p.access.authenticate(authorization)
    except AuthError as exc:
        if exc.code == "keys_unavailable":  # the identity provider, not the caller, is at fault
            raise ApiError(503, exc.code, exc.message, headers={"Retry-After": "5"}) from None
        raise ApiError(401, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"}) from None


def _refuse_if_throttled(retry_after: float | None, principal: Principal) -> None:
    if retry_after is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests from {principal.account} or {principal.agency}; retry in {retry_after:.1f} s",
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )


def _client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else ""


CallerDep = Annotated[Caller, Depends(caller)]
ViewerDep = Annotated[Caller, Depends(viewer)]
