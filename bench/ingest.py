"""Collector ingest throughput against a bare paho subscriber on the same broker.

    python -m bench.ingest [--quick] [--json]

Method: a backlog of per-camera CameraStatus messages (~250 bytes, QoS 1) is published by two publisher
processes into persistent MQTT sessions created beforehand; then the consumer connects and drains it. The
anchor is a bare paho subscriber process that only counts; ours is the collector's Ingest (decode, agent
check, queue, batched durable upserts) in its own process, with SQLite (WAL, synchronous=NORMAL) and with
PostgreSQL 15 (fsync on). Draining a backlog gives every consumer the same conditions: the publishers are
done and do not compete for the two cores. Also measured: the 68,000-camera city health snapshot (25
districts x 2,720 cameras) from publication to queryable, and two collector processes on a shared
subscription against one. Closing ratio: our sustained SQLite ingest rate / the bare subscriber's.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import Report, parser
from collector.config import CollectorSettings
from collector.ingest import Ingest, Subscriber
from collector.metrics import CollectorMetrics
from collector.store import open_store
from contract import topics
from contract.codec import encode
from contract.districts import DISTRICTS
from contract.messages import AgentState, CameraStatus, HealthEntry, HealthSnapshot
from tests.collector.pg import PgService, available
from tests.services import Mosquitto

CAMERAS_PER_DISTRICT = 2720
DISTRICT_SLUGS = sorted(DISTRICTS)
NOW = datetime.now(UTC).replace(microsecond=0)
Counter = Any  # multiprocessing.Value


def agent_states() -> list[AgentState]:
    return [
        AgentState(
            district=d, agent_id=f"agent-{d}", state="online", version="1.0.0", cameras=2720, sent_at=NOW
        )
        for d in DISTRICT_SLUGS
    ]


def status_payloads(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        d = DISTRICT_SLUGS[i % 25]
        cam = f"{d}-cam-{(i // 25) % CAMERAS_PER_DISTRICT:05d}"
        degraded = i % 7 == 0
        msg = CameraStatus(
            district=d,
            camera_id=cam,
            agent_id=f"agent-{d}",
            state="degraded" if degraded else "online",
            reasons=["low_fps", "clock_skew"] if degraded else [],
            clock_offset_s=0.42,
            last_error="RTSP DESCRIBE answered 503" if degraded else None,
            since=NOW - timedelta(seconds=i % 3600),
            checked_at=NOW + timedelta(milliseconds=i),
        )
        dl = encode(msg)
        out.append((dl.topic, dl.payload))
    return out


def _client(client_id: str = "") -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def _publish(port: int, items: list[tuple[str, bytes]], qos: int, retain: bool = False) -> None:
    client = _client()
    client.connect("127.0.0.1", port)
    client.loop_start()
    info = None
    for i, (topic, payload) in enumerate(items):
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if qos and i % 5000 == 4999:
            info.wait_for_publish(60)  # keep unacknowledged QoS 1 messages far below paho's 65,535 ids
    if info is not None:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def publish_parallel(
    port: int, items: list[tuple[str, bytes]], qos: int = 1, procs: int = 2, retain: bool = False
) -> None:
    workers = [mp.Process(target=_publish, args=(port, items[i::procs], qos, retain)) for i in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def make_session(port: int, client_id: str, subscriptions: list[Any]) -> None:
    """Create a persistent session with its subscriptions, then leave: the broker queues for it."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client = _client(client_id)
    client.connect("127.0.0.1", port, clean_start=True, properties=props)
    acked = mp.Event()
    client.on_subscribe = lambda *_: acked.set()
    client.loop_start()
    client.subscribe(subscriptions)
    acked.wait(10)
    client.disconnect()
    client.loop_stop()


def end_session(port: int, client_id: str) -> None:
    """Drop a persistent session so the broker stops queueing for it."""
    client = _client(client_id)
    client.connect("127.0.0.1", port, clean_start=True)
    client.disconnect()


def bare_worker(port: int, client_id: str, counter: Counter, stop: Any) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client = _client(client_id)
    n = 0

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal n
        n += 1
        if n % 500 == 0:
            counter.value = n

    client.on_message = on_message
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    while not stop.wait(0.05):
        counter.value = n
    client.disconnect()
    client.loop_stop()


def collector_settings(
    port: int, url: str, client_id: str, group: str | None, expiry_s: int = 3600
) -> CollectorSettings:
    return CollectorSettings(
        collector_id=client_id,
        mqtt={"port": port},
        store={"url": url},
        ingest={
            "share_group": group,
            "batch_max": 2000,
            "batch_ms": 50,
            "bootstrap_retained": False,
            "session_expiry_s": expiry_s,
        },
    )


def collector_worker(  # noqa: PLR0917 - a multiprocessing target takes positional arguments
    port: int, url: str, client_id: str, group: str | None, expiry_s: int, counter: Counter, stop: Any
) -> None:
    settings = collector_settings(port, url, client_id, group, expiry_s)
    ingest = Ingest(settings, CollectorMetrics())
    ingest.start()
    while not stop.wait(0.02):
        counter.value = ingest.committed
    ingest.stop()
    counter.value = ingest.committed


def wait_for(check: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def drain(  # noqa: PLR0917
    port: int,
    n: int,
    items: list[tuple[str, bytes]],
    consumers: list[tuple[Any, tuple[Any, ...]]],
    sessions: list[tuple[str, list[Any]]],
    extra: int,
    timeout_s: float = 300,
) -> float:
    """Messages per second at which `consumers` drain a backlog of `n` messages (plus agent states)."""
    for client_id, subs in sessions:
        make_session(port, client_id, subs)
    publish_parallel(port, [(encode(a).topic, encode(a).payload) for a in agent_states()], procs=1)
    publish_parallel(port, items)
    counters = [mp.Value("q", 0) for _ in consumers]
    stop = mp.Event()
    procs = [
        mp.Process(target=fn, args=(*args, c, stop))
        for (fn, args), c in zip(consumers, counters, strict=True)
    ]
    began = time.perf_counter()
    for p in procs:
        p.start()
    target = n + extra
    deadline = time.monotonic() + timeout_s
    while sum(c.value for c in counters) < target and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - began
    done: int = sum(c.value for c in counters)
    stop.set()
    for p in procs:
        p.join(60)
    for client_id, _subs in sessions:
        end_session(port, client_id)
    if done < target:
        print(f"  warning: only {done} of {target} messages arrived", flush=True)
    return done / elapsed


def ingest_subscriptions(port: int, url: str, client_id: str, group: str | None) -> list[Any]:
    sub = Subscriber.__new__(Subscriber)
    sub.settings = collector_settings(port, url, client_id, group)
    return sub.subscriptions()


def measure_ours(  # noqa: PLR0917
    port: int, n: int, items: list[tuple[str, bytes]], url: str, tag: str, collectors: int = 1
) -> float:
    group = "bench" if collectors > 1 else None
    ids = [f"bench-{tag}-{i}" for i in range(collectors)]
    for_url = open_store(url)
    for_url.migrate()
    for_url.close()
    return drain(
        port,
        n,
        items,
        [(collector_worker, (port, url, cid, group, 3600)) for cid in ids],
        [(cid, ingest_subscriptions(port, url, cid, group)) for cid in ids],
        extra=25 * collectors,
    )


def city_snapshot(port: int, url: str, tag: str) -> float:
    """Seconds from publishing the 25 district snapshots (68,000 cameras) until all are queryable."""
    store = open_store(url)
    store.migrate()
    publish_parallel(
        port, [(encode(a).topic, encode(a).payload) for a in agent_states()], procs=1, retain=True
    )
    counter, stop = mp.Value("q", 0), mp.Event()
    worker = mp.Process(
        target=collector_worker, args=(port, url, f"bench-city-{tag}", None, 0, counter, stop)
    )
    worker.start()
    wait_for(lambda: counter.value >= 25, "the retained agent states")  # the collector is subscribed
    taken = datetime.now(UTC)
    snaps = [
        HealthSnapshot(
            district=d,
            agent_id=f"agent-{d}",
            taken_at=taken,
            cameras=[
                HealthEntry(
                    camera_id=f"{d}-cam-{i:05d}", state="online" if i % 10 else "offline", checked_at=taken
                )
                for i in range(CAMERAS_PER_DISTRICT)
            ],
        )
        for d in DISTRICT_SLUGS
    ]
    payloads = [(topics.health(s.district), encode(s).payload) for s in snaps]
    expected = {
        "online": CAMERAS_PER_DISTRICT - CAMERAS_PER_DISTRICT // 10,
        "offline": CAMERAS_PER_DISTRICT // 10,
    }
    began = time.perf_counter()
    publish_parallel(port, payloads, qos=0, procs=1)
    wait_for(lambda: all(store.health_counts(d) == expected for d in DISTRICT_SLUGS), "25 snapshots indexed")
    elapsed = time.perf_counter() - began
    stop.set()
    worker.join(60)
    store.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    args = parser("ingest", __doc__.split("\n")[0]).parse_args(argv)
    n = 20_000 if args.quick else 68_000
    report = Report("ingest")
    items = status_payloads(n)
    report.add("messages", n)
    report.add("payload_bytes_avg", round(sum(len(p) for _, p in items) / n))
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        Mosquitto().start(Path(tmp) / "mqtt") as broker,
    ):
        port = broker.port
        status_filter = topics.telemetry_filters()[2]
        anchor = drain(
            port,
            n,
            items,
            [(bare_worker, (port, "bench-bare"))],
            [("bench-bare", [(status_filter, 1)])],
            extra=0,
        )
        report.add("bare_subscriber_msg_per_s", round(anchor))
        sqlite_url = f"sqlite://{tmp}/index.db"
        ours = measure_ours(port, n, items, sqlite_url, "sqlite")
        report.add("ingest_sqlite_msg_per_s", round(ours))
        report.add(
            "city_snapshot_sqlite_s", round(city_snapshot(port, f"sqlite://{tmp}/city.db", "sqlite"), 3)
        )
        shared = measure_ours(port, n, items, f"sqlite://{tmp}/shared.db", "shared", collectors=2)
        report.add("ingest_sqlite_2_collectors_shared_msg_per_s", round(shared))
        if available():
            with PgService().start(durable=True) as pg:
                pg_rate = measure_ours(port, n, items, pg.new_database("bench"), "pg")
                report.add("ingest_postgres_msg_per_s", round(pg_rate))
                report.add(
                    "city_snapshot_postgres_s", round(city_snapshot(port, pg.new_database("city"), "pg"), 3)
                )
    report.add("target_msg_per_s", 25_000)
    report.finish(
        f"{ours:,.0f} msg/s ingest (SQLite)",
        f"{anchor:,.0f} msg/s bare paho subscriber",
        ours / anchor,
        as_json=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
