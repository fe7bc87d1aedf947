"""asyncio helpers shared by the simulator's parts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any


async def settle(aws: Iterable[Awaitable[Any]]) -> None:
    """Await them all, then raise the first failure. A plain gather raises at the first failure while the
    others run on: the caller's cleanup would miss the listeners they open afterwards."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed
