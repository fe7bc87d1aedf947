"""Follows `cctv/v1/+/live/+` apart from the ingest writer: a segment is listed within milliseconds of its
announcement, not after the writer's batching window and process hop.

A paho client (its own persistent MQTT session) appends each update to a list; one thread takes everything
waiting, applies it in one transaction (collector/live/updates.py) and then acknowledges it (QoS 1: an update
that was not committed is delivered again, and a repeat is recognised). A malformed update, or one for a
session this collector does not know or from the wrong district or agent, is counted by reason
(`collector_rejected_messages_total`) and dropped. While the store is unavailable the thread retries with
capped backoff; updates wait meanwhile, unacknowledged.

Lifecycle: start after the store is migrated; stop before the store closes (it finishes its batch first).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.config import CollectorSettings
from collector.index.store import Store, StoreRejectedError, StoreUnavailableError
from collector.ingest.acks import AckLedger
from collector.ingest.buffered_client import BufferedClient
from collector.live import updates
from collector.live.metrics import LiveMetrics
from collector.metrics import CollectorMetrics
from common import jsonlog
from common.mqtt_client import connect_persistent, new_client
from contract import topics
from contract.codec import decode
from contract.errors import ContractError
from contract.messages import LiveUpdate

log = logging.getLogger(__name__)

Item = tuple[int, str, bytes]  # (number, topic, payload)
_MAX_BACKOFF_S = 5.0


class LiveFollower:
    def __init__(
        self,
        settings: CollectorSettings,
        metrics: CollectorMetrics,
        live_metrics: LiveMetrics,
        open_store: Callable[[], Store],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.metrics, self.live_metrics = metrics, live_metrics
        self._open_store, self._clock = open_store, clock
        self.subscribed = threading.Event()
        self._acks = AckLedger()
        self._lock = threading.Lock()
        self._pending: list[Item] = []
        self._count = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._rejects = jsonlog.RejectLog(log, settings.ingest.reject_log_interval_s)
        self._thread = threading.Thread(target=self._run, name="collector-live", daemon=True)
        base = settings.mqtt.client_id or settings.collector_id
        mqtt_settings = settings.mqtt.model_copy(update={"client_id": f"{base}-live"})
        made = new_client(mqtt_settings, base, BufferedClient)
        self.client = cast(BufferedClient, made)
        self.client.manual_ack_set(True)
        self.client.acks_due = self._acks.due
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        self._thread.start()
        connect_persistent(self.client, self.settings.mqtt, self.settings.live.session_expiry_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Finish the batch in hand, acknowledge it, disconnect (what is left waits at the broker)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self.client.wake()
        self._acks.wait_sent(2.0)
        self.client.disconnect()
        self.client.loop_stop()

    # -- the applying thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        store = self._open_store()
        try:
            while not self._stopping.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                with self._lock:
                    items, self._pending = self._pending, []
                if items:
                    self._until_applied(store, items)
        finally:
            store.close()

    def _until_applied(self, store: Store, items: list[Item]) -> None:
        delay = 0.1
        while True:
            try:
                self._apply_all(store, items)
            except StoreUnavailableError as exc:
                self.metrics.store_errors.inc()
                log.warning("live updates: the store is unavailable (%s); retrying in %.1f s", exc, delay)
                if self._stopping.wait(delay):
                    return  # unacknowledged: the broker delivers them again to the resumed session
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            except Exception:  # a bug must cost these updates, not the thread that lists every segment
                self.metrics.rejected.labels(reason="internal_error").inc(len(items))
                log.exception("live updates: could not apply %s updates; dropped", len(items))
            self._acks.committed(items[-1][0])
            self.client.wake()
            return

    def _apply_all(self, store: Store, items: list[Item]) -> None:
        decoded = [(topic, self._decode(topic, payload)) for _n, topic, payload in items]
        wanted = [(topic, u) for topic, u in decoded if u is not None]
        try:
            self._commit(store, wanted)
        except StoreRejectedError:  # one value the database refuses: apply them one by one, drop that one
            for one in wanted:
                try:
                    self._commit(store, [one])
                except StoreRejectedError as exc:
                    self._refused(exc.reason, one[0], str(exc))

    def _commit(self, store: Store, wanted: list[tuple[str, LiveUpdate]]) -> None:
        now = self._clock()
        with store.transaction() as tx:
            outcomes = [(topic, updates.apply(tx, u, now)) for topic, u in wanted]
        for topic, outcome in outcomes:
            if outcome.refused is not None:
                self._refused(outcome.refused, topic, "")
                continue
            self.metrics.received.labels(kind="live").inc()
            seg, session = outcome.listed, outcome.session
            if seg is not None and session is not None:
                self.live_metrics.listing.observe(seg.listed_at - seg.started_at)
                if seg.msn == 0:
                    self.live_metrics.first_segment.observe(seg.listed_at - session.created_at)

    def _decode(self, topic: str, payload: bytes) -> LiveUpdate | None:
        try:
            message = decode(topic, payload)
        except ContractError as exc:
            self.metrics.rejected.labels(reason=exc.reason).inc()
            self._rejects.note(exc, topic)
            return None
        assert isinstance(message, LiveUpdate)  # a live topic decodes as a LiveUpdate or not at all
        return message

    def _refused(self, reason: str, topic: str, detail: str) -> None:
        self.metrics.rejected.labels(reason=reason).inc()
        self._rejects.dropped(reason, topic, detail)

    # -- paho callbacks (network thread): they must never raise ---------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("live follower: the broker refused the connection: %s", reason)
            return
        group = self.settings.ingest.share_group
        topic_filter = topics.live_filter()
        client.subscribe(topics.shared(group, topic_filter) if group else topic_filter, options=_QOS1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("live follower: the broker refused the subscription: %s", reasons)
            return
        self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("live follower disconnected (%s); paho reconnects", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            with self._lock:
                self._count += 1
                if msg.qos:
                    self._acks.add(self._count, self.client.connection, [msg.mid])
                self._pending.append((self._count, msg.topic, bytes(msg.payload)))
            self._wake.set()
        except Exception:  # paho's callbacks must never raise
            log.exception("could not queue a live update on %s", msg.topic[:200])


_QOS1 = SubscribeOptions(qos=1)
