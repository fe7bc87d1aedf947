"""MQTT in, index out: a paho-mqtt (MQTT 5) subscriber thread hands raw messages, in chunks, through a bounded
queue to a writer process (collector/ingest/writer.py) that decodes, checks and commits them in batches (one
transaction per `ingest.batch_max` messages or `ingest.batch_ms`, whichever first).

Lifecycle (sinks first, sources last): `Ingest.start()` starts the writer, then the subscriber; `stop()`
stops taking messages, lets the writer commit what it holds, acknowledges that, then disconnects (the broker
keeps the persistent session and queues QoS 1 messages meanwhile).

Durability: a QoS 1 message is acknowledged only once the writer has committed it (or rejected it), see
acks.py. A crash loses nothing acknowledged: the broker delivers the rest again to the resumed
session, and the idempotent upserts absorb what was committed twice. The broker may send at most
`ingest.receive_maximum` messages ahead of their acknowledgement (the MQTT 5 Receive Maximum).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue
import threading
import time
from multiprocessing.queues import Queue
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.config import CollectorSettings
from collector.ingest import writer
from collector.ingest.acks import AckLedger
from collector.ingest.buffered_client import BufferedClient
from collector.ingest.health import IngestHealth
from collector.metrics import CollectorMetrics
from common.mqtt_client import connect_persistent, new_client
from contract import topics

log = logging.getLogger(__name__)

CHUNK = 256  # messages per hand-over: amortises the queue's locking and pickling
_FLUSH_S = 0.005
_ACK_WAIT_S = 5.0  # at a stop, for the network thread to take the last acknowledgements


class Subscriber:
    """The paho client: subscribes, hands raw messages to the writer in numbered chunks and acknowledges them
    once committed (`committed`). Callbacks never raise."""

    def __init__(
        self, settings: CollectorSettings, sink: Queue[writer.Chunk | None], metrics: CollectorMetrics
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.subscribed = threading.Event()
        self._bootstrap_mid: int | None = None
        self._stopping = threading.Event()
        self._pausing = threading.Event()
        self._pending: list[tuple[str, bytes]] = []
        self._pending_mids: list[int] = []  # QoS 1 ids in _pending, all from connection _connection
        self._connection = 0
        self._chunk = 0  # number of the last chunk handed over
        self._lock = threading.Lock()
        self.acks = AckLedger()
        self._flusher = threading.Thread(target=self._flush_periodically, name="collector-flush", daemon=True)
        self.client = self._make_client()

    def _make_client(self) -> BufferedClient:
        made = new_client(self.settings.mqtt, self.settings.collector_id, BufferedClient)
        client = cast(BufferedClient, made)
        client.max_queued_messages_set(0)
        client.manual_ack_set(True)
        client.acks_due = self.acks.due
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        ing = self.settings.ingest
        connect_persistent(self.client, self.settings.mqtt, ing.session_expiry_s, ing.receive_maximum)
        self._flusher.start()
        self.client.loop_start()

    def pause(self) -> None:
        """Take no more messages (those that arrive stay unacknowledged: the broker sends them again to the
        resumed session) and hand over what is pending."""
        self._pausing.set()
        if self._flusher.is_alive():
            self._flusher.join()
        self.flush()

    def committed(self, through: int) -> None:
        """The writer has committed every chunk up to `through`: acknowledge their messages."""
        self.acks.committed(through)
        self.client.wake()

    def stop(self) -> None:
        """After `pause` and the writer's last commit: send the last acknowledgements and disconnect (the
        session stays at the broker)."""
        self.pause()
        self.client.wake()
        if self.client.is_connected() and not self.acks.wait_sent(_ACK_WAIT_S):
            log.warning("stopping with acknowledgements unsent: the broker will deliver those messages again")
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()

    def flush(self) -> None:
        # Blocking on a full queue is the back-pressure: the broker queues for this session meanwhile.
        with self._lock:
            if self._pending:
                self._chunk += 1
                if self._pending_mids:
                    self.acks.add(self._chunk, self._connection, self._pending_mids)
                self.sink.put((self._chunk, self._pending))
                self._pending, self._pending_mids = [], []

    def _flush_periodically(self) -> None:
        while not self._pausing.wait(_FLUSH_S):
            self.flush()

    # -- paho callbacks (network thread) --------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self.metrics.connected.set(1)
        log.info("connected to the broker (session present: %s)", flags.session_present)
        with self._lock:  # ids from a lost connection mean nothing now; the broker sends those messages again
            self._pending_mids = []
            self._connection = self.client.connection
        client.subscribe(self.subscriptions())
        ing = self.settings.ingest
        if ing.share_group and ing.bootstrap_retained and not flags.session_present:
            # Retained state is never delivered to a shared subscription: fetch it once without sharing.
            result, self._bootstrap_mid = client.subscribe(
                [(f, SubscribeOptions(qos=1)) for f in _retained_filters()]
            )
            log.info("bootstrapping retained camera state (%s)", result)

    def subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        # retainHandling=1: retained messages only for a new subscription, not on every resumed session.
        group = self.settings.ingest.share_group
        opts = SubscribeOptions(qos=1, retainHandling=1)
        if not group:
            return [(f, opts) for f in topics.telemetry_filters()]
        agent_state, *rest = topics.telemetry_filters()
        # Every collector follows agent presence itself: each gate must know every district's agent.
        return [(agent_state, opts), *((topics.shared(group, f), opts) for f in rest)]

    def _on_subscribe(self, client: mqtt.Client, _u: Any, mid: int, reasons: Any, _p: Any) -> None:
        if mid == self._bootstrap_mid:
            # The broker queued the retained messages when it accepted the subscription; they are still
            # delivered after this unsubscribe, and live traffic keeps coming through the shared filters.
            client.unsubscribe(_retained_filters())
            self._bootstrap_mid = None
            return
        failed = [r for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused subscriptions: %s", failed)
        self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.metrics.connected.set(0)
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from the broker (%s); paho reconnects", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # Only a list append here: decoding and checks happen in the writer process (see writer.py).
        try:
            with self._lock:
                if self._pausing.is_set():
                    return  # not acknowledged: delivered again to the resumed session
                self._pending.append((msg.topic, bytes(msg.payload)))  # no copy: it is bytes
                if msg.qos:
                    self._pending_mids.append(msg.mid)
                full = len(self._pending) >= CHUNK
            if full:
                self.flush()
        except Exception:  # paho's callbacks must never raise
            log.exception("could not queue a message on %s", msg.topic[:200])


def _retained_filters() -> list[str]:
    _agent, meta, status, _health, _clip = topics.telemetry_filters()
    return [meta, status]


class Ingest:
    """The subscriber and the writer process, started and stopped in the right order."""

    def __init__(self, settings: CollectorSettings, metrics: CollectorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        ctx = mp.get_context("spawn")  # no fork of a process that runs threads
        self.chunks: Queue[writer.Chunk | None] = ctx.Queue(
            maxsize=max(2, settings.ingest.queue_max // CHUNK)
        )
        self.reports: Queue[writer.WriterStats] = ctx.Queue()
        self.stop_requested = ctx.Event()
        self.process = ctx.Process(
            target=writer.run,
            args=(settings, self.chunks, self.reports, self.stop_requested),
            name="collector-writer",
            daemon=True,
        )
        self.subscriber = Subscriber(settings, self.chunks, metrics)
        self.committed = 0
        self.health = IngestHealth(settings.ingest.stall_after_s)
        # Read at every scrape, so it is right even while the writer waits for the store.
        metrics.queue_depth.set_function(self.queue_depth)
        self._reader = threading.Thread(target=self._read_reports, name="collector-reports", daemon=True)

    def start_writer(self) -> None:
        self.process.start()
        self._reader.start()

    def start(self) -> None:
        self.start_writer()
        self.subscriber.start()

    def stop(self) -> None:
        """Stop within `ingest.stop_grace_s`: the subscriber takes no more messages, the writer commits what
        is queued (unless the store is unavailable: then it gives up at once and commits nothing more), the
        acknowledgements of what was committed are sent, then the subscriber disconnects."""
        grace = self.settings.ingest.stop_grace_s
        deadline = time.monotonic() + grace
        self.stop_requested.set()  # first: a writer stuck on the store keeps reading, so pause() never blocks
        self.subscriber.pause()
        with contextlib.suppress(queue.Full):
            self.chunks.put(None, timeout=grace)
        self.process.join(max(0.0, deadline - time.monotonic()))
        if self.process.is_alive():
            log.error("the writer did not stop within %s s; killing it", grace)
            self.process.kill()
            self.process.join()
        self.chunks.cancel_join_thread()  # what is still queued was not committed; do not wait to feed it
        self._reader.join(max(1.0, deadline - time.monotonic()))  # every commit reported: every ack is due
        self.subscriber.stop()

    def writer_alive(self) -> bool:
        return self.process.is_alive()

    def queue_depth(self) -> int:
        """Approximate number of messages waiting for the writer, and held by it while the store is down."""
        try:
            queued = self.chunks.qsize() * CHUNK
        except NotImplementedError:  # macOS
            queued = 0
        return queued + self.health.held()

    def _read_reports(self) -> None:
        while True:
            stats = self.reports.get()
            if stats.final:
                return
            self._record(stats)

    def _record(self, stats: writer.WriterStats) -> None:
        m = self.metrics
        for kind, n in stats.received.items():
            m.received.labels(kind=kind).inc(n)
        for reason, n in stats.rejected.items():
            m.rejected.labels(reason=reason).inc(n)
        for reason, n in stats.dead_letters.items():
            m.dead_letters.labels(reason=reason).inc(n)
        if stats.store_errors:
            m.store_errors.inc(stats.store_errors)
        if stats.written:
            m.written.inc(stats.written)
            m.batch_messages.observe(stats.written)
            m.last_commit.set(time.time())
            self.committed += stats.written
        if stats.batch_seconds is not None:
            m.batch_seconds.observe(stats.batch_seconds)
        for o in stats.clip_outcomes:
            m.platform.clip_finished(o.agency, o.district, o.outcome, o.first_clip_s)
        self.health.note(stats)
        if stats.committed_through is not None:
            self.subscriber.committed(stats.committed_through)
