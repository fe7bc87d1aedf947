"""`GET /v1/me`: who the token names and what the policy lets that account do, so that a client (the
console) offers only those actions. It grants nothing: every request is still judged on its own."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from collector.access.decision import allowed_actions
from collector.access.policy import Action, AgencyPolicy
from collector.platform.errors import ERROR_RESPONSES
from collector.platform.guard import CallerDep
from collector.platform.routing import Route
from contract.messages import Service

router = APIRouter(tags=["access"], responses=ERROR_RESPONSES, route_class=Route)


class Limits(BaseModel):
    """The agency's clip-window and radius limits (docs/access.md)."""

    max_window_s: int
    max_past_s: int
    max_future_s: int
    max_radius_m: dict[str, float]


class Me(BaseModel):
    sub: str
    agency: str
    agency_name: str | None  # None: the agency is not in the policy (every action is refused)
    role: str
    role_description: str
    video: bool
    services: list[Service]
    districts: list[str] | Literal["all"]
    scope: str
    actions: list[Action]
    limits: Limits | None


@router.get("/me", summary="The signed-in account, its agency and role, and the actions it may take")
def me(c: CallerDep) -> Me:
    policy, principal, agency = c.p.access.policy, c.principal, c.agency
    role = policy.roles.get(principal.role)
    return Me(
        sub=principal.account,
        agency=principal.agency,
        agency_name=None if agency is None else agency.name,
        role=principal.role,
        role_description="" if role is None else role.description,
        video=agency is not None and agency.video,
        services=[] if agency is None else agency.services,
        districts=[] if agency is None else agency.districts,
        scope="none" if agency is None else agency.scope,
        actions=allowed_actions(policy, principal),
        limits=None if agency is None else _limits(agency),
    )


def _limits(agency: AgencyPolicy) -> Limits:
    return Limits.model_validate(agency, from_attributes=True)
