"""The one error type a consumer of the contract has to catch."""

from __future__ import annotations

from typing import Literal

ContractErrorReason = Literal[
    "unknown_topic",
    "oversized",
    "invalid_json",
    "unknown_version",
    "invalid_payload",
    "district_mismatch",
    "topic_mismatch",
    "unknown_agent",
    "agent_of_other_district",
    "camera_of_other_district",
]


class ContractError(ValueError):
    """An inbound message that does not follow the contract. Consumers count it by `reason` and drop it."""

    def __init__(self, reason: ContractErrorReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: ContractErrorReason = reason
        self.detail = detail
