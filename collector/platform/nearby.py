"""Cameras near an incident: the in-memory NearestIndex of every camera with a position, kept current.

`CameraIndex` is rebuilt from the cameras table when it changes: a thread checks (count, newest meta
update) every `platform.nearest_refresh_s` and rebuilds only then, so requests never wait for a rebuild and
always read a whole index (the reference is swapped). It owns its store connection.

`near()` merges the neighbours of each of an incident's positions (a moving subject has several): a camera's
distance and bearing are those from the position nearest to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence

from collector.index import queries
from collector.index.spatial import CameraPoint, NearestIndex, Neighbour
from collector.index.store import Store, StoreError

log = logging.getLogger(__name__)


class CameraIndex:
    def __init__(self, open_store: Callable[[], Store], interval_s: float) -> None:
        self._open_store = open_store
        self._interval_s = interval_s
        self._index = NearestIndex.build([])
        self._stamp: tuple[int, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def index(self) -> NearestIndex:
        return self._index

    def start(self) -> None:
        """Build once (so the first incident sees every camera), then keep refreshing in a thread."""
        store = self._open_store()
        try:
            self.refresh(store)
        finally:
            store.close()
        self._thread = threading.Thread(target=self._run, name="nearest-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def refresh(self, store: Store) -> bool:
        """Rebuild if the cameras changed; whether it did."""
        with store.reading() as tx:
            stamp = queries.cameras_stamp(tx)
            if stamp == self._stamp:
                return False
            rows = queries.camera_positions(tx)
        self._index = NearestIndex.build(CameraPoint(c, d, lat, lon) for c, d, lat, lon in rows)
        self._stamp = stamp
        log.info("nearest-camera index rebuilt: %d cameras with a position", len(self._index))
        return True

    def _run(self) -> None:
        store = self._open_store()
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    self.refresh(store)
                except StoreError as exc:  # the next round tries again; requests use the last index
                    log.warning("nearest-camera index not refreshed: %s", exc)
        finally:
            store.close()


def near(
    index: NearestIndex,
    positions: Sequence[tuple[float, float]],
    k: int,
    max_m: float | None,
    districts: Collection[str] | None = None,
) -> list[Neighbour]:
    """The `k` cameras nearest to any of `positions` (within `max_m`, of `districts`), nearest first."""
    if len(positions) == 1:  # the usual case: the index ranks them already
        lat, lon = positions[0]
        return index.nearest(lat, lon, k, max_m=max_m, districts=districts)
    best: dict[str, Neighbour] = {}
    for lat, lon in positions:
        for n in index.nearest(lat, lon, k, max_m=max_m, districts=districts):
            known = best.get(n.camera_id)
            if known is None or n.distance_m < known.distance_m:
                best[n.camera_id] = n
    return sorted(best.values(), key=lambda n: (n.distance_m, n.camera_id))[:k]
