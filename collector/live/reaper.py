"""Ends live sessions on their own, and deletes old live segments: one thread of the collector process.

Every `live.reaper_interval_s` it stops (index, signed stop command, audit record; collector/live/sessions.py)
each session whose `until` passed, that nobody fetched the playlist of for `live.idle_stop_s`, whose incident
closed or expired, or whose camera the incident's grant no longer covers; and it sets the sessions gauge. The
agent stops at `until` by itself too, so a stop command that cannot be delivered ends nothing late.

Every `live.janitor_interval_s` it deletes the segment objects listed more than `live.retention_s` ago (and
init segments no newer segment needs), then their rows: objects first, so that a failed deletion leaves a row
to retry rather than an object nobody knows of. A saved range is an ordinary clip, not these segments.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from collector.access.decision import in_grant
from collector.access.policy import Policy
from collector.config import LiveSettings
from collector.index import incidents, queries
from collector.index import live as db
from collector.index.store import Store, StoreError
from collector.index.tx import Tx
from collector.live import sessions
from collector.live.metrics import LiveMetrics
from collector.platform import grants

if TYPE_CHECKING:
    from collector.commands.signing import CommandSigner
    from collector.platform.manifests import ClipObjects

log = logging.getLogger(__name__)
JANITOR_BATCH = 1000  # segments per deletion round (one S3 DeleteObjects call)


class Reaper:
    def __init__(
        self,
        settings: LiveSettings,
        *,
        policy: Callable[[], Policy],
        signer: CommandSigner,
        notify_outbox: Callable[[], None],
        objects: ClipObjects | None,
        metrics: LiveMetrics,
        open_store: Callable[[], Store],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self._policy, self._signer, self._notify = policy, signer, notify_outbox
        self._objects, self._metrics = objects, metrics
        self._open_store, self._clock = open_store, clock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-live-reaper", daemon=True)
        self._next_janitor = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        store = self._open_store()
        try:
            while not self._stopping.wait(self.settings.reaper_interval_s):
                self.round(store)
        finally:
            store.close()

    def round(self, store: Store) -> None:
        """One pass: stop what must end, update the gauge, and delete expired segments when due."""
        try:
            if self.reap(store):
                self._notify()
            with store.reading() as tx:
                self._metrics.set_sessions(db.active_counts(tx))
            if self._clock() >= self._next_janitor:
                self.clean(store)
                self._next_janitor = self._clock() + self.settings.janitor_interval_s
        except StoreError as exc:
            log.warning("live reaper: the store is unavailable (%s); next round retries", exc)
        except Exception:  # the thread must outlive any one bad round
            log.exception("live reaper round failed")

    def reap(self, store: Store) -> int:
        """Stop every session that must end now; how many were stopped."""
        now = self._clock()
        with store.reading() as tx:
            due = [row.session_id for row in db.active(tx) if self._why_end(tx, row, now)]
        stopped = 0
        for session_id in due:
            with store.transaction() as tx:  # judged again under the row's lock: a renewal may have come
                row = db.session(tx, session_id, lock=True)
                reason = None if row is None or row.state == "stopped" else self._why_end(tx, row, now)
                if row is None or reason is None:
                    continue
                record = sessions.system_stop_record(row, reason, now)
                stopped += sessions.stop(tx, self._signer, row, reason=reason, record=record, now=now)
            log.info("live session %s stopped: %s", session_id, reason,
                     extra={"session": session_id, "reason": reason})  # fmt: skip
        return stopped

    def _why_end(self, tx: Tx, row: db.SessionRow, now: float) -> str | None:
        if now >= row.until_at:
            return sessions.EXPIRED
        if now >= row.last_fetch_at + self.settings.idle_stop_s:
            return sessions.IDLE
        incident = incidents.incident(tx, row.incident_id)
        if incident is None or incident.state(now)[0] == "closed":
            return sessions.INCIDENT_CLOSED
        camera = queries.cameras_by_id(tx, [row.camera_id]).get(row.camera_id)
        if camera is None:
            return sessions.GRANT_ENDED
        if not in_grant(self._policy(), grants.view(incident), grants.place(incident, camera), now):
            return sessions.GRANT_ENDED
        return None

    def clean(self, store: Store) -> int:
        """Delete segments listed more than the retention ago, objects first; how many."""
        cutoff = self._clock() - self.settings.retention_s
        deleted = 0
        while not self._stopping.is_set():
            with store.reading() as tx:
                rows = db.expired_segments(tx, cutoff, JANITOR_BATCH)
                inits = db.unused_inits(tx, rows, cutoff)
            if not rows:
                return deleted
            if self._objects is not None:
                self._objects.delete([r.object_key for r in rows] + inits)
            with store.transaction() as tx:
                db.delete_segments(tx, rows)
            deleted += len(rows)
            log.info("live janitor: deleted %s segments and %s init segments", len(rows), len(inits))
        return deleted
