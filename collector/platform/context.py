"""What the API's routes share, built once by the composition root (collector/app.py) and reached through
FastAPI dependencies: the per-thread stores, the health report, settings, and the platform's parts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from collector.config import PlatformSettings
from collector.index.store import Store
from collector.platform.stores import ThreadStores


@dataclass
class Platform:
    stores: ThreadStores
    health: Callable[[], dict[str, Any]]
    settings: PlatformSettings = field(default_factory=PlatformSettings)
    clock: Callable[[], float] = time.time

    def store(self) -> Store:
        return self.stores.get()


def platform(request: Request) -> Platform:
    """FastAPI dependency: the app's Platform."""
    found: Platform = request.app.state.platform
    return found
