"""Poison and forged messages against a real `cctv-collector run`, a real Mosquitto and SQLite or PostgreSQL:
ingest goes on, every good message is indexed, every bad one is counted by reason, /healthz tells the truth,
and SIGTERM stops a collector whose store is down."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from collector.index.store import open_store
from contract import topics
from contract.codec import encode
from contract.messages import AnyMessage
from tests.collector.conftest import agent, api_headers, clip, health, meta, status
from tests.collector.pg import PgService
from tests.faults.conftest import start_collector_process, wait_until
from tests.services import Mosquitto

# The database refuses these rows, as it would a value it cannot hold: a message the contract accepts and the
# index does not. One trigger per table the writer writes, each matching ids that start with "poison".
SQLITE_REFUSE = "".join(
    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN NEW.{column} LIKE 'poison%' "
    "BEGIN SELECT RAISE(ABORT, 'refused by the fault test'); END;"
    for table, column in (("agents", "agent_id"), ("cameras", "camera_id"), ("clips", "request_id"))
)
POSTGRES_REFUSE = (
    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'refused by the fault test' USING ERRCODE = 'check_violation'; END $$;"
) + "".join(
    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} FOR EACH ROW "
    f"WHEN (NEW.{column} LIKE 'poison%') EXECUTE FUNCTION refuse();"
    for table, column in (("agents", "agent_id"), ("cameras", "camera_id"), ("clips", "request_id"))
)


class Collector:
    def __init__(self, directory: Path, broker: Mosquitto, **kw: str) -> None:
        self.proc, self.http_port, self.metrics_port = start_collector_process(directory, broker, **kw)
        self.headers = api_headers(directory)

    def healthz(self) -> tuple[int, dict[str, Any]] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v1/healthz", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
        except OSError:
            return None

    def cameras(self) -> dict[str, tuple[str, str, str]]:
        url = f"http://127.0.0.1:{self.http_port}/v1/cameras?limit=1000"
        with urllib.request.urlopen(urllib.request.Request(url, headers=self.headers), timeout=5) as resp:
            return {
                c["camera_id"]: (c["district"], c["agent_id"], c["state"])
                for c in json.loads(resp.read())["cameras"]
            }

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def wait_healthy(self) -> None:
        wait_until(lambda: (self.healthz() or (0, {}))[0] == 200, timeout_s=20, what="/healthz 200")


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"agent-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish(client: mqtt.Client, *messages: AnyMessage) -> None:
    for m in messages:
        d = encode(m)
        client.publish(d.topic, d.payload, qos=1, retain=d.retain).wait_for_publish(5)


def publish_raw(client: mqtt.Client, topic: str, body: dict[str, Any]) -> None:
    client.publish(topic, json.dumps(body).encode(), qos=1).wait_for_publish(5)


def stopped(c: Collector) -> None:
    if c.proc.poll() is None:
        c.proc.kill()
        c.proc.wait()


@pytest.fixture(params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(store URL, SQL that makes the index refuse poison rows) on each engine."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'run.db'}", SQLITE_REFUSE
    pg: PgService = request.getfixturevalue("pg_service")
    return pg.new_database(f"t_{uuid.uuid4().hex[:12]}"), POSTGRES_REFUSE


def refuse_poison(url: str, script: str) -> None:
    if url.startswith("sqlite://"):
        with sqlite3.connect(url[len("sqlite://") :]) as conn:
            conn.executescript(script)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script)


def test_poison_of_every_kind_is_dead_lettered_and_ingest_goes_on(
    tmp_path: Path, mosquitto: Mosquitto, publisher: mqtt.Client, index: tuple[str, str]
) -> None:
    url, script = index
    c = Collector(tmp_path, mosquitto, store_url=url)
    try:
        c.wait_healthy()  # migrated
        refuse_poison(url, script)
        publish(publisher, agent())
        poison: list[AnyMessage] = [
            agent("jongno", "poison-agent"),
            meta("poison-meta"),
            status("poison-status", "online", 1),
            health({"poison-health": "online", "cam-h": "online"}, 2),
            clip("poison-clip", "succeeded", 3),
        ]
        for i, bad in enumerate(poison):
            publish(publisher, *(status(f"cam-{i}-{j}", "online", 1) for j in range(20)), bad)
        publish(publisher, clip("req-good", "succeeded", 4, camera_id="cam-0-0", object_key="k"))
        # What the contract refuses before it reaches the index: integers beyond the index's columns.
        body = json.loads(encode(agent(minutes=5)).payload)
        publish_raw(publisher, topics.agent_state("gangnam"), {**body, "cameras": 2**64})
        body = json.loads(encode(clip("req-big", "succeeded", 5)).payload)
        publish_raw(publisher, topics.clip("gangnam", "req-big"), {**body, "size_bytes": 2**70})
        publish(publisher, status("cam-last", "offline", 6))

        wait_until(lambda: "cam-last" in c.cameras(), timeout_s=20, what="the last good status")
        cams = c.cameras()
        assert set(cams) == {f"cam-{i}-{j}" for i in range(5) for j in range(20)} | {"cam-last"}
        wait_until(
            lambda: c.metric("cctv_collector_dead_letters_total", reason="constraint") == len(poison),
            what="every poison message dead-lettered",
        )
        assert c.metric("cctv_collector_rejected_messages_total", reason="invalid_payload") == 2
        assert c.metric("cctv_collector_store_errors_total") == 0  # refused values are not outages
        status_code, health_body = c.healthz() or (0, {})
        assert status_code == 200 and health_body["store_ok"], health_body
        store = open_store(url)
        try:
            letters = store.dead_letters()
            assert sorted(d.topic for d in letters) == sorted(encode(m).topic for m in poison)
            assert {d.reason for d in letters} == {"constraint"}
            assert [r.request_id for r in store.clips()] == ["req-good"]
        finally:
            store.close()
    finally:
        stopped(c)


def test_a_district_publishing_as_another_is_refused_and_counted(
    tmp_path: Path, mosquitto: Mosquitto, publisher: mqtt.Client
) -> None:
    c = Collector(tmp_path, mosquitto)
    try:
        c.wait_healthy()
        mapo = {"district": "mapo", "agent_id": "agent-mapo"}
        publish(publisher, agent(), meta("cam-1"), status("cam-1", "online", 1), agent("mapo", "agent-mapo"))
        publish(
            publisher,
            meta("cam-1", **mapo),  # mapo's agent claims gangnam's camera on its own topics
            status("cam-1", "offline", 2, **mapo),
            health({"cam-1": "offline", "mapo-1": "online"}, 3, **mapo),
            clip("req-1", "accepted", 3).model_copy(update=mapo),
            status("cam-2", "offline", 3, agent_id="agent-mapo"),  # on gangnam's topics, under its own id
            agent("jongno", "agent-mapo"),  # and announcing itself for a third district
            meta("mapo-2", **mapo),
        )
        wait_until(lambda: "mapo-2" in c.cameras(), what="mapo's own camera")
        assert c.cameras() == {
            "cam-1": ("gangnam", "agent-gangnam", "online"),
            "mapo-1": ("mapo", "agent-mapo", "online"),
            "mapo-2": ("mapo", "agent-mapo", "unknown"),
        }
        expected = {"camera_of_other_district": 4, "unknown_agent": 1, "agent_of_other_district": 1}
        wait_until(
            lambda: all(
                c.metric("cctv_collector_rejected_messages_total", reason=r) == n for r, n in expected.items()
            ),
            what=f"rejections {expected}",
        )
        assert c.metric("cctv_collector_agent_online", district="jongno") == 0
    finally:
        stopped(c)


def test_sigterm_stops_the_collector_while_its_store_is_down(
    tmp_path: Path, mosquitto: Mosquitto, publisher: mqtt.Client
) -> None:
    """PostgreSQL stops: the writer retries, /healthz and the metrics say so, and SIGTERM still stops the
    collector within its grace, committing nothing it pretends to have committed."""
    grace_s = 5.0
    with PgService().start() as pg:
        c = Collector(tmp_path, mosquitto, store_url=pg.url, ingest=f"stop_grace_s = {grace_s}")
        try:
            c.wait_healthy()
            publish(publisher, agent())
            wait_until(
                lambda: c.metric("cctv_collector_written_messages_total") == 1, what="the agent committed"
            )
            pg.stop()
            publish(publisher, meta("cam-1"), status("cam-1", "online", 1))
            wait_until(lambda: c.metric("cctv_collector_store_errors_total") >= 2, what="retries counted")
            code, body = c.healthz() or (0, {})
            assert code == 503 and not body["store_ok"] and body["store_error"], body
            assert c.metric("cctv_collector_queue_depth") >= 2  # held by the writer, not lost from view
            assert c.metric("cctv_collector_written_messages_total") == 1
            began = time.monotonic()
            c.proc.send_signal(signal.SIGTERM)
            assert c.proc.wait(grace_s + 5) == 0
            assert time.monotonic() - began < grace_s
        finally:
            stopped(c)


def test_a_locked_sqlite_index_is_waited_for_and_nothing_is_dead_lettered(
    tmp_path: Path, mosquitto: Mosquitto, publisher: mqtt.Client
) -> None:
    """Another process holds the index's write lock: the writer's commits fail as unavailable (after SQLite's
    busy timeout), /healthz says so, and once the lock is gone every message is committed, none
    dead-lettered."""
    c = Collector(tmp_path, mosquitto)
    try:
        c.wait_healthy()
        publish(publisher, agent())
        wait_until(lambda: c.metric("cctv_collector_written_messages_total") == 1, what="the agent committed")
        locker = sqlite3.connect(tmp_path / "run.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        publish(publisher, *(status(f"cam-{i}", "online", 1) for i in range(20)))
        wait_until(
            lambda: c.metric("cctv_collector_store_errors_total") >= 1, timeout_s=20, what="a failed commit"
        )
        code, body = c.healthz() or (0, {})
        assert code == 503 and "locked" in body["store_error"], body
        locker.execute("ROLLBACK")
        locker.close()
        wait_until(lambda: len(c.cameras()) == 20, timeout_s=20, what="every status committed")
        c.wait_healthy()
        assert c.metric("cctv_collector_written_messages_total") == 21
        store = open_store(f"sqlite://{tmp_path / 'run.db'}")
        try:
            assert store.dead_letters() == []
        finally:
            store.close()
    finally:
        stopped(c)
