"""What the API's routes share, built once by the composition root (collector/app.py) and reached through
FastAPI dependencies: the per-thread stores, the health report, settings, and the platform's parts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from collector.access.gate import Access
from collector.access.ratelimit import RateLimiter
from collector.access.settings import AccessSettings
from collector.config import LiveSettings, PlatformSettings
from collector.index.store import Store
from collector.metrics import PlatformMetrics
from collector.platform.nearby import CameraIndex
from collector.platform.stores import ThreadStores

if TYPE_CHECKING:
    from collector.audit.verify import Verdict
    from collector.commands.signing import CommandSigner
    from collector.platform.manifests import ClipObjects


def _closed_access() -> Access:
    return Access.from_settings(AccessSettings())


@dataclass
class Platform:
    stores: ThreadStores
    health: Callable[[], dict[str, Any]]
    settings: PlatformSettings = field(default_factory=PlatformSettings)
    access: Access = field(default_factory=_closed_access)  # default: refuses everyone
    cameras: CameraIndex | None = None
    signer: CommandSigner | None = None  # None: clip requests answer 503
    notify_outbox: Callable[[], None] = lambda: None
    objects: ClipObjects | None = None  # the clip bucket; None: no manifest checks or playback URLs
    clock: Callable[[], float] = time.time
    # The audit chain checked against its checkpoints; None: no checkpoint bucket (verify answers 503).
    audit_verify: Callable[[Store], Verdict] | None = None
    metrics: PlatformMetrics = field(default_factory=PlatformMetrics)  # default: a registry of its own
    live: LiveSettings = field(default_factory=LiveSettings)
    playlist_limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.playlist_limiter = RateLimiter(self.live.playlist_per_min)

    def store(self) -> Store:
        return self.stores.get()


async def platform(request: Request) -> Platform:
    """FastAPI dependency: the app's Platform (async: no blocking work, so no hop to a worker thread)."""
    found: Platform = request.app.state.platform
    return found
