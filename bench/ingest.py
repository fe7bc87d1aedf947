"""Collector ingest throughput against a bare paho subscriber on the same broker.

    python -m bench.ingest [--quick] [--json]

Method: a backlog of per-camera CameraStatus messages (~220 bytes, QoS 1) is published by two publisher
processes into persistent MQTT sessions created beforehand; then the consumer connects and drains it. The
collector's index already holds the city's 68,000 cameras (loaded beforehand from an earlier round of
reports), so the drain updates known cameras and writes history where a state changed, as in service. The
anchor is a bare paho subscriber process that only counts; ours is the collector's Ingest (decode, agent
check, queue, batched durable upserts) in its own process, with SQLite (WAL, synchronous=NORMAL) and with
PostgreSQL 15 (fsync on). Draining a backlog gives every consumer the same conditions: the publishers are
done and do not compete for the two cores. Rates are sustained rates, taken between 10% and 90% of the
backlog (process start-up and the last batch are outside); CPU is read from /proc over the same window.
This machine is a shared VM and single runs vary by 10-20%: the anchor and the one-collector rates are
measured three times (once with --quick), each round's rate is listed, and the median run is reported.
The queue between a collector's MQTT side and its writer is set to 5,000 messages (default 100,000), far
below the backlog: otherwise the MQTT side reads the whole backlog ahead and the writer finishes alone,
which is not a sustained rate.

Also measured: the 68,000-camera city health snapshot (25 districts x 2,720 cameras) from publication to
queryable, and two collector processes on a shared subscription against one. That last comparison is made
twice: free on this machine (where one collector and the broker already use most of the cores), and with
each collector (its MQTT process and its writer together) capped at 0.7 of a core by a cgroup (root only),
which stands for a small machine of its own, the way the shared subscription is meant to scale out: the
broker and PostgreSQL are not capped and keep the rest, as on their own servers. The capped comparison runs
three rounds (one with --quick) and reports each round's ratio and their median, with the collectors' CPU
time per message (equal per message means that they share no bottleneck). Every figure is reported
for SQLite and for PostgreSQL.
Also shown: the same count-only subscriber on the collector's BufferedClient, the most that the collector's
MQTT side could hand to its writer here. Closing ratio: our sustained SQLite ingest rate / the bare (stock
paho) subscriber's.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import Report, parser, process_cpu_seconds
from collector.config import CollectorSettings
from collector.index.store import open_store
from collector.ingest.buffered_client import BufferedClient
from collector.ingest.pipeline import Ingest, Subscriber
from collector.ingest.writer import BatchWriter, Received, WriterStats
from collector.metrics import CollectorMetrics
from contract import topics
from contract.codec import encode
from contract.districts import DISTRICTS
from contract.messages import AgentState, CameraStatus, HealthEntry, HealthSnapshot
from tests.collector.pg import PgService, available
from tests.services import Mosquitto

CAMERAS_PER_DISTRICT = 2720
QUEUE_MAX = 5000  # messages between a collector's MQTT side and its writer
DISTRICT_SLUGS = sorted(DISTRICTS)
NOW = datetime.now(UTC).replace(microsecond=0)
Counter = Any  # multiprocessing.Value


def agent_states() -> list[AgentState]:
    return [
        AgentState(
            district=d,
            agent_id=f"agent-{d}",
            state="online",
            session=int(NOW.timestamp() * 1000),
            version="1.0.0",
            cameras=2720,
            sent_at=NOW,
        )
        for d in DISTRICT_SLUGS
    ]


def status_payloads(n: int, later: int = 0) -> list[tuple[str, bytes]]:
    """n status reports, one per camera; a `later` round is an hour on, and a seventh of the cameras change
    state between rounds (so history rows are written as well as camera rows)."""
    out = []
    for i in range(n):
        d = DISTRICT_SLUGS[i % 25]
        cam = f"{d}-cam-{(i // 25) % CAMERAS_PER_DISTRICT:05d}"
        degraded = (i + later) % 7 == 0
        msg = CameraStatus(
            district=d,
            camera_id=cam,
            agent_id=f"agent-{d}",
            state="degraded" if degraded else "online",
            reasons=["low_fps", "clock_skew"] if degraded else [],
            clock_offset_s=0.42,
            last_error="RTSP DESCRIBE answered 503" if degraded else None,
            since=NOW + timedelta(hours=later, seconds=-(i % 3600)),
            checked_at=NOW + timedelta(hours=later, milliseconds=i),
        )
        dl = encode(msg)
        out.append((dl.topic, dl.payload))
    return out


def prime(url: str, items: list[tuple[str, bytes]]) -> None:
    """Migrate and load the index with the city's cameras as they were, straight through the writer's code:
    the measured drain then updates known cameras, as a running collector does."""
    store = open_store(url)
    store.migrate()
    writer = BatchWriter(collector_settings(1883, url, "prime", None), store)  # no MQTT here
    stats = WriterStats()
    messages = [(encode(a).topic, encode(a).payload) for a in agent_states()] + items
    for start in range(0, len(messages), 5000):
        pending: list[Received] = []
        for topic, payload in messages[start : start + 5000]:
            writer.add(pending, stats, topic, payload)
        writer.commit(pending, stats)
    store.close()


def _client(client_id: str = "", cls: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    return cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


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


def bare_worker(port: int, client_id: str, buffered: bool, counter: Counter, stop: Any) -> None:
    """A subscriber that only counts: stock paho (the anchor), or the collector's BufferedClient (the most
    the collector's MQTT side could deliver)."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client = _client(client_id, BufferedClient if buffered else mqtt.Client)
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
            # Far below the backlog: with the default (100,000) the MQTT side would read the whole backlog
            # ahead and the writer finish alone, which is not a sustained rate.
            "queue_max": QUEUE_MAX,
            "bootstrap_retained": False,
            "session_expiry_s": expiry_s,
        },
    )


def collector_worker(  # noqa: PLR0917 - a multiprocessing target takes positional arguments
    port: int,
    url: str,
    client_id: str,
    group: str | None,
    expiry_s: int,
    cgroup: Path | None,
    counter: Counter,
    stop: Any,
) -> None:
    if cgroup is not None:  # before the writer process starts: it inherits the cgroup
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    settings = collector_settings(port, url, client_id, group, expiry_s)
    ingest = Ingest(settings, CollectorMetrics())
    ingest.start()
    while not stop.wait(0.02):
        counter.value = ingest.committed
    ingest.stop()
    counter.value = ingest.committed


CAP_CORES = 0.7  # CPU per collector (its MQTT process and writer together) in the scale-out comparison
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")  # the cgroup v1 cpu controller


def can_cap_cpu() -> bool:
    return os.geteuid() == 0 and (CPU_CGROUPS / "cgroup.procs").exists()


@contextlib.contextmanager
def cpu_caps(names: list[str], cores: float) -> Iterator[list[Path]]:
    """One cgroup per name, each allowed `cores` of CPU time (CFS quota); removed afterwards."""
    paths = [CPU_CGROUPS / f"bench-ingest-{name}-{os.getpid()}" for name in names]
    for path in paths:
        path.mkdir()
        (path / "cpu.cfs_period_us").write_text("100000")
        (path / "cpu.cfs_quota_us").write_text(str(int(cores * 100_000)))
    try:
        yield paths
    finally:
        for path in paths:
            with contextlib.suppress(OSError):
                path.rmdir()


def cpu_times() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process, by pid, with its command name."""
    out = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            out[int(entry)] = (Path(f"/proc/{entry}/comm").read_text().strip(), process_cpu_seconds(entry))
    return out


@dataclass
class Drained:
    """A drain's sustained rate and the cores that the broker, the consumers and PostgreSQL used meanwhile."""

    rate: float
    broker_cores: float
    consumer_cores: float
    postgres_cores: float


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
    broker_pid: int | None = None,
    timeout_s: float = 300,
) -> Drained:
    """The sustained rate at which `consumers` drain a backlog of `n` messages (plus agent states), taken
    between 10% and 90% of it, with the CPU used over the same window."""
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
    for p in procs:
        p.start()
    target = n + extra
    marks: list[tuple[int, float, dict[int, tuple[str, float]]]] = []
    deadline = time.monotonic() + timeout_s
    for share in (0.1, 0.9):
        while (done := sum(c.value for c in counters)) < share * target and time.monotonic() < deadline:
            time.sleep(0.01)  # 0.5% of a 2 s window; faster polling takes CPU from the consumers
        marks.append((done, time.perf_counter(), cpu_times()))
    while sum(c.value for c in counters) < target and time.monotonic() < deadline:
        time.sleep(0.01)
    done = sum(c.value for c in counters)
    stop.set()
    for p in procs:
        p.join(60)
    for client_id, _subs in sessions:
        end_session(port, client_id)
    if done < target:
        print(f"  warning: only {done} of {target} messages arrived", flush=True)
    (n0, t0, cpu0), (n1, t1, cpu1) = marks
    seconds = t1 - t0
    used = {pid: t - cpu0.get(pid, (name, 0.0))[1] for pid, (name, t) in cpu1.items()}
    broker = used.pop(broker_pid, 0.0) if broker_pid else 0.0
    ours = os.getpid()
    consumers_cpu = sum(t for p, t in used.items() if p != ours and cpu1[p][0].startswith("python"))
    postgres_cpu = sum(t for p, t in used.items() if cpu1[p][0].startswith("postgres"))
    return Drained((n1 - n0) / seconds, broker / seconds, consumers_cpu / seconds, postgres_cpu / seconds)


def ingest_subscriptions(port: int, url: str, client_id: str, group: str | None) -> list[Any]:
    sub = Subscriber.__new__(Subscriber)
    sub.settings = collector_settings(port, url, client_id, group)
    return sub.subscriptions()


def measure_ours(  # noqa: PLR0917
    port: int,
    n: int,
    rounds: tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]],
    url: str,
    tag: str,
    collectors: int = 1,
    cgroups: list[Path] | None = None,
    broker_pid: int | None = None,
) -> Drained:
    group = "bench" if collectors > 1 else None
    ids = [f"bench-{tag}-{i}" for i in range(collectors)]
    caps: list[Path | None] = list(cgroups) if cgroups else [None] * collectors
    before, items = rounds
    prime(url, before)
    return drain(
        port,
        n,
        items,
        [
            (collector_worker, (port, url, cid, group, 3600, core))
            for cid, core in zip(ids, caps, strict=True)
        ],
        [(cid, ingest_subscriptions(port, url, cid, group)) for cid in ids],
        extra=25 * collectors,
        broker_pid=broker_pid,
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
        target=collector_worker, args=(port, url, f"bench-city-{tag}", None, 0, None, counter, stop)
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
    items = (status_payloads(n), status_payloads(n, later=1))
    report.add("messages", n)
    report.add("payload_bytes_avg", round(sum(len(p) for _, p in items[1]) / n))
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        Mosquitto().start(Path(tmp) / "mqtt") as broker,
    ):
        status_filter = topics.telemetry_filters()[2]
        rounds = 1 if args.quick else 3
        bare = {
            buffered: [
                drain(
                    broker.port,
                    n,
                    items[1],
                    [(bare_worker, (broker.port, f"bench-bare-{buffered}", buffered))],
                    [(f"bench-bare-{buffered}", [(status_filter, 1)])],
                    extra=0,
                    broker_pid=broker.pid,
                )
                for _ in range(rounds)
            ]
            for buffered in (False, True)
        }
        anchor = median_run(bare[False])
        report.add("bare_subscriber_msg_per_s_rounds", [round(d.rate) for d in bare[False]])
        report.add("bare_subscriber_msg_per_s", round(anchor.rate))
        report.add("buffered_client_subscriber_msg_per_s", round(median_run(bare[True]).rate))
        ours = engine_figures(
            report, broker, n, items, "sqlite", lambda name: f"sqlite://{tmp}/{name}.db", rounds
        )
        if available():
            with PgService().start(durable=True) as pg:
                engine_figures(report, broker, n, items, "postgres", pg.new_database, rounds)
    report.add("target_msg_per_s", 25_000)
    report.finish(
        f"{ours.rate:,.0f} msg/s ingest (SQLite)",
        f"{anchor.rate:,.0f} msg/s bare paho subscriber",
        ours.rate / anchor.rate,
        as_json=args.json,
    )
    return 0


def median_run(runs: list[Drained]) -> Drained:
    """The run with the median rate (the lower middle one of an even count)."""
    return sorted(runs, key=lambda d: d.rate)[(len(runs) - 1) // 2]


def engine_figures(  # noqa: PLR0917
    report: Report,
    broker: Mosquitto,
    n: int,
    items: tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]],
    engine: str,
    url_for: Any,
    rounds: int = 3,
) -> Drained:
    """One collector, the city snapshot, and two collectors against one: free, then one core each."""
    port, pid = broker.port, broker.pid
    ones = [
        measure_ours(port, n, items, url_for(f"{engine}_one_{r}"), f"{engine}-one-{r}", broker_pid=pid)
        for r in range(rounds)
    ]
    one = median_run(ones)
    report.add(f"{engine}_msg_per_s_rounds", [round(d.rate) for d in ones])
    report.add(f"{engine}_msg_per_s", round(one.rate))
    report.add(f"{engine}_collector_cores", round(one.consumer_cores, 2))
    report.add(f"{engine}_broker_cores", round(one.broker_cores, 2))
    if engine == "postgres":
        report.add("postgres_server_cores", round(one.postgres_cores, 2))
    report.add(f"{engine}_city_snapshot_s", round(city_snapshot(port, url_for(f"{engine}_city"), engine), 3))
    two = measure_ours(port, n, items, url_for(f"{engine}_two"), f"{engine}-two", 2, broker_pid=pid)
    report.add(f"{engine}_2_collectors_msg_per_s", round(two.rate))
    report.add(f"{engine}_2_collectors_cores", round(two.consumer_cores + two.broker_cores, 2))
    report.add(f"{engine}_2_collectors_scale_out", round(two.rate / one.rate, 2))
    if can_cap_cpu():
        # Rounds alternate one and two collectors, so that drift on a noisy machine hits both alike.
        runs: list[list[Drained]] = []
        for r in range(rounds):
            pair = []
            for k in (1, 2):
                tag = f"{engine}-cap{k}-{r}"
                with cpu_caps([f"{tag}-{i}" for i in range(k)], CAP_CORES) as cgroups:
                    url = url_for(tag.replace("-", "_"))
                    pair.append(measure_ours(port, n, items, url, tag, k, cgroups, broker_pid=pid))
            runs.append(pair)
        for k, label in ((0, "1_collector"), (1, "2_collectors")):
            report.add(f"{engine}_capped_{label}_msg_per_s", [round(p[k].rate) for p in runs])
            # Collector CPU per message: equal for one and two collectors means nothing is shared that
            # slows them down (broker, store); the ratio of rates then only reflects the CPU given.
            us = [p[k].consumer_cores / p[k].rate * 1e6 for p in runs]
            report.add(f"{engine}_capped_{label}_cpu_us_per_msg", [round(u) for u in us])
        ratios = [p[1].rate / p[0].rate for p in runs]
        report.add(f"{engine}_capped_scale_out_rounds", [round(x, 2) for x in ratios])
        report.add(f"{engine}_capped_scale_out_median", round(statistics.median(ratios), 2))
    return one


if __name__ == "__main__":
    raise SystemExit(main())
