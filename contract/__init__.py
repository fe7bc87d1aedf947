"""The wire contract between district agents and the city collector (MQTT topics and JSON messages)."""

from contract.errors import ContractError

__all__ = ["ContractError"]
