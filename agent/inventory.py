"""After enumeration: which firmware profile each camera matches, and what WS-Discovery says about the ledger.

Discovery results are reconciled and reported (found but not in the ledger, in the ledger but not found,
moved); the ledger stays the source of truth and is never rewritten here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agent import wsdiscovery
from agent.config import DiscoverySettings
from agent.firmware import FirmwareCatalog
from agent.metrics import AgentMetrics
from agent.reconcile import KnownIdentity, Reconciliation, reconcile
from agent.registry import CameraRecord, Registry

log = logging.getLogger(__name__)


def profiles_from_hints(catalog: FirmwareCatalog, records: Iterable[CameraRecord]) -> None:
    """Before the first contact, apply the quirks of the vendor the ledger names (`vendor_hint`: a profile
    name or a manufacturer), so that e.g. a Digest-only or auth-for-time camera is spoken to right at once."""
    by_name = {p.name: p for p in catalog.profiles}
    for record in records:
        hint = record.ledger.vendor_hint.strip()
        if not hint or record.firmware_profile is not None:
            continue
        profile = by_name.get(hint.lower()) or next(
            (p for p in catalog.profiles if p.name != "generic" and p.manufacturer.search(hint)), None
        )
        record.firmware_profile = profile


def assess_firmware(catalog: FirmwareCatalog, records: Iterable[CameraRecord]) -> None:
    """Attach the matching profile (its quirks) and the minimum-firmware verdict to each enumerated camera."""
    for record in records:
        if record.info is None:
            continue
        assessment = catalog.assess(record.info)
        record.firmware_profile = assessment.profile
        record.observation.firmware_below_minimum = assessment.below_minimum


async def discover_and_reconcile(
    settings: DiscoverySettings, registry: Registry, metrics: AgentMetrics
) -> Reconciliation:
    """One WS-Discovery round over the configured targets, reconciled with the ledger."""
    result = await wsdiscovery.probe(
        settings.targets,
        multicast_interfaces=settings.multicast_interfaces,
        port=settings.port,
        window_s=settings.window_s,
        rate_per_s=settings.rate_per_s,
    )
    for kind, count in result.rejected.items():
        metrics.errors.labels(f"wsd_{kind}").inc(count)
    records = registry.records.values()
    known = {
        r.camera_id: KnownIdentity(endpoint=r.endpoint, device=r.info.identity[1] if r.info else None)
        for r in records
    }
    outcome = reconcile([r.ledger for r in records], result.found, known=known)
    for match in outcome.matched:
        registry.records[match.camera_id].endpoint = match.endpoint
    for moved in outcome.moved:
        registry.records[moved.camera_id].endpoint = moved.endpoint
    log.info("discovery reconciled with the ledger", extra={"discovery": outcome.summary()})
    return outcome
