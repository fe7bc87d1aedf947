"""Compares what discovery found with the district's camera ledger, and reports the differences.

The ledger stays the source of truth: nothing here rewrites it. A camera is recognised by identity first
(the WS-Discovery endpoint urn, or the MAC/serial identity from enumeration, both remembered per ledger id
from earlier runs), by address second. So a camera that moved to an address that another ledger row names
is reported as moved (with both ledger ids), not as that other row being matched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.ledger import LedgerCamera
from agent.wsdiscovery import Discovered


@dataclass(frozen=True)
class KnownIdentity:
    """What an earlier run learned about a ledger camera: its endpoint urn and/or MAC/serial identity."""

    endpoint: str | None = None
    device: str | None = None  # CameraInfo.identity value ("mac-…" / "sn-…")

    def identity_keys(self) -> set[str]:
        return {k for k in (_key("urn", self.endpoint), _key("dev", self.device)) if k}


@dataclass(frozen=True)
class Match:
    camera_id: str
    address: str
    endpoint: str  # remember it (KnownIdentity) so the next run recognises the camera wherever it moves


@dataclass(frozen=True)
class Moved:
    """The camera known as `camera_id` now answers at `new_address`.

    `ledger_id_at_new_address` is the ledger row that names the new address, if any (old and new ledger id).
    """

    camera_id: str
    old_address: str
    new_address: str
    ledger_id_at_new_address: str | None
    endpoint: str


@dataclass(frozen=True)
class Unknown:
    """A device that answered and is in no ledger row (or is another device than the row at its address)."""

    address: str
    endpoint: str
    name: str | None
    hardware: str | None
    ledger_id_at_address: str | None  # set when the row at this address is known to be another device


@dataclass
class Reconciliation:
    matched: list[Match] = field(default_factory=list)
    moved: list[Moved] = field(default_factory=list)
    found_not_in_ledger: list[Unknown] = field(default_factory=list)
    in_ledger_not_found: list[str] = field(default_factory=list)  # ledger ids

    def summary(self, *, include_addresses: bool = False) -> dict[str, object]:
        """JSON-ready. Addresses are sensitive (they never leave the district): only on request."""

        def where(address: str) -> dict[str, str]:
            return {"address": address} if include_addresses else {}

        return {
            "counts": {
                "matched": len(self.matched),
                "moved": len(self.moved),
                "found_not_in_ledger": len(self.found_not_in_ledger),
                "in_ledger_not_found": len(self.in_ledger_not_found),
            },
            "moved": [
                {
                    "camera_id": m.camera_id,
                    "ledger_id_at_new_address": m.ledger_id_at_new_address,
                    **(
                        {"old_address": m.old_address, "new_address": m.new_address}
                        if include_addresses
                        else {}
                    ),
                }
                for m in self.moved
            ],
            "found_not_in_ledger": [
                {
                    "endpoint": u.endpoint,
                    "name": u.name,
                    "hardware": u.hardware,
                    "ledger_id_at_address": u.ledger_id_at_address,
                    **where(u.address),
                }
                for u in self.found_not_in_ledger
            ],
            "in_ledger_not_found": sorted(self.in_ledger_not_found),
        }


def reconcile(
    ledger: Sequence[LedgerCamera],
    found: Mapping[str, Discovered],
    *,
    known: Mapping[str, KnownIdentity] | None = None,
    found_devices: Mapping[str, str] | None = None,
) -> Reconciliation:
    """Sort every ledger row and every discovered device into exactly one category.

    `known`: ledger id -> identities learned earlier. `found_devices`: address -> MAC/serial identity of a
    discovered device, when it was enumerated.
    """
    known = known or {}
    found_devices = found_devices or {}
    by_key = _identity_index(ledger, known)
    by_address = _address_index(ledger)
    result = Reconciliation()
    accounted: set[str] = set()
    for address, device in sorted(found.items()):
        keys = {k for k in (_key("urn", device.endpoint), _key("dev", found_devices.get(address))) if k}
        owner = next((by_key[k] for k in sorted(keys) if k in by_key), None)
        at_address = by_address.get(_norm(address), [])
        if owner is not None:
            _place_known(result, owner, address, device, at_address)
            accounted.add(owner.camera_id)
            continue
        # No identity match: the rows at this address match unless they are known to be another device.
        fitting = [c for c in at_address if not _conflict(known.get(c.camera_id), keys)]
        if fitting:
            result.matched.extend(Match(c.camera_id, address, device.endpoint) for c in fitting)
            accounted.update(c.camera_id for c in fitting)
            continue
        other = at_address[0].camera_id if at_address else None
        result.found_not_in_ledger.append(
            Unknown(address, device.endpoint, device.name, device.hardware, ledger_id_at_address=other)
        )
    result.in_ledger_not_found = [c.camera_id for c in ledger if c.camera_id not in accounted]
    return result


def _place_known(
    result: Reconciliation,
    owner: LedgerCamera,
    address: str,
    device: Discovered,
    at_address: Sequence[LedgerCamera],
) -> None:
    if _norm(owner.host) == _norm(address):
        result.matched.append(Match(owner.camera_id, address, device.endpoint))
        return
    other = next((c.camera_id for c in at_address if c.camera_id != owner.camera_id), None)
    result.moved.append(Moved(owner.camera_id, owner.host, address, other, device.endpoint))


def _conflict(known: KnownIdentity | None, device_keys: set[str]) -> bool:
    """True when both sides carry an identity of the same kind and (no key matched, so) they differ."""
    if known is None:
        return False
    kinds = {k.partition(":")[0] for k in known.identity_keys()}
    return any(k.partition(":")[0] in kinds for k in device_keys)


def _identity_index(
    ledger: Iterable[LedgerCamera], known: Mapping[str, KnownIdentity]
) -> dict[str, LedgerCamera]:
    index: dict[str, LedgerCamera] = {}
    for camera in ledger:
        for key in known.get(camera.camera_id, KnownIdentity()).identity_keys():
            index.setdefault(key, camera)
    return index


def _address_index(ledger: Iterable[LedgerCamera]) -> dict[str, list[LedgerCamera]]:
    index: dict[str, list[LedgerCamera]] = {}
    for camera in ledger:
        index.setdefault(_norm(camera.host), []).append(camera)
    return index


def _key(kind: str, value: str | None) -> str | None:
    return f"{kind}:{value.strip().lower()}" if value and value.strip() else None


def _norm(host: str) -> str:
    """IP addresses compare canonically (`010.0.0.1` is not an IP, names compare case-insensitively)."""
    try:
        return str(ipaddress.ip_address(host.strip()))
    except ValueError:
        return host.strip().lower().rstrip(".")
