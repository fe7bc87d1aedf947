"""The production broker configuration against a real Mosquitto: TLS only, an account per district agent
and per collector, and the ACL from `cctv-collector broker-acl`. A refused publish or subscription is proven
by non-delivery: a message sent after it by the same client arrives, the refused one never does."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.metrics import AgentMetrics
from agent.mqtt_link import MqttLink
from contract import topics
from contract.codec import encode
from contract.messages import AgentPresence, AgentState
from tests.integration.conftest import eventually
from tests.mqtt_probe import Probe
from tests.secure_broker import SecureBroker

pytestmark = pytest.mark.integration
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87
# An MQTT 5 CONNECT without credentials, client id "cid".
CONNECT = bytes([0x10, 0x10, 0, 4, *b"MQTT", 5, 0x02, 0, 30, 0, 0, 3, *b"cid"])


def _answers_connect(sock: socket.socket) -> bool:
    """True if the broker answers a CONNECT on `sock` with a CONNACK."""
    try:
        sock.sendall(CONNECT)
        return sock.recv(16).startswith(b"\x20")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return False


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SecureBroker]:
    with SecureBroker(tmp_path / "broker", ["mapo", "jung"]).start() as b:
        yield b


@pytest.fixture
def probes(broker: SecureBroker) -> Iterator[dict[str, Probe]]:
    """Connected clients of the collector and both agents."""
    made = {name: Probe(broker.settings(name), f"probe-{name}") for name in ("collector-1", "agent-mapo",
                                                                              "agent-jung")}  # fmt: skip
    for probe in made.values():
        assert probe.connect() == 0
    yield made
    for probe in made.values():
        probe.close()


def test_an_agent_cannot_publish_as_another_district(probes: dict[str, Probe]) -> None:
    collector, mapo = probes["collector-1"], probes["agent-mapo"]
    for topic_filter in topics.telemetry_filters():
        assert collector.subscribe(topic_filter) == 1
    forged = [topics.health("jung"), topics.agent_state("jung"), topics.camera_status("jung", "cam-1"),
              topics.clip("jung", "req-1"), topics.command("mapo", "clip")]  # fmt: skip
    for topic in forged:
        assert mapo.publish(topic, b"forged") == NOT_AUTHORIZED, topic
    assert mapo.publish(topics.health("mapo"), b"own") == 0
    collector.wait_for(topics.health("mapo"), b"own")
    assert [t for t, payload in collector.received if payload == b"forged"] == []


def test_an_agent_never_reads_another_districts_commands(probes: dict[str, Probe]) -> None:
    """Mosquitto 2.0 grants the subscription (SUBACK 1) but delivers nothing the ACL does not let it read."""
    collector, mapo, jung = probes["collector-1"], probes["agent-mapo"], probes["agent-jung"]
    mapo.subscribe(topics.commands_filter("jung"))
    assert mapo.subscribe(topics.commands_filter("mapo")) == 1
    assert jung.subscribe(topics.commands_filter("jung")) == 1
    assert collector.publish(topics.command("jung", "clip"), b"for jung") == 0
    assert collector.publish(topics.command("mapo", "clip"), b"for mapo") == 0
    jung.wait_for(topics.command("jung", "clip"), b"for jung")
    mapo.wait_for(topics.command("mapo", "clip"), b"for mapo")
    assert mapo.received == [(topics.command("mapo", "clip"), b"for mapo")]


def test_an_agent_cannot_command_another_district_and_a_collector_cannot_forge_telemetry(
    probes: dict[str, Probe],
) -> None:
    collector, mapo, jung = probes["collector-1"], probes["agent-mapo"], probes["agent-jung"]
    assert mapo.subscribe(topics.commands_filter("mapo")) == 1
    assert jung.publish(topics.command("mapo", "clip"), b"forged") == NOT_AUTHORIZED
    assert collector.publish(topics.agent_state("mapo"), b"forged") == NOT_AUTHORIZED
    assert collector.publish(topics.command("mapo", "arm"), b"real") == 0
    mapo.wait_for(topics.command("mapo", "arm"), b"real")
    assert mapo.received == [(topics.command("mapo", "arm"), b"real")]


def test_collectors_share_the_telemetry_of_every_district(probes: dict[str, Probe]) -> None:
    """The shared subscription of scaled-out collectors (MQTT 5) passes the ACL."""
    collector = probes["collector-1"]
    assert collector.subscribe(topics.shared("city", topics.telemetry_filters()[0])) == 1
    for district in ("mapo", "jung"):
        assert probes[f"agent-{district}"].publish(topics.agent_state(district), b"online") == 0
        collector.wait_for(topics.agent_state(district), b"online")


def test_a_last_will_cannot_speak_for_another_district(broker: SecureBroker, probes: dict[str, Probe]):
    collector = probes["collector-1"]
    assert collector.subscribe(topics.telemetry_filters()[0]) == 1
    liar = Probe(broker.settings("agent-mapo"), "probe-liar")
    liar.client.will_set(topics.agent_state("jung"), b"will of a liar", qos=1)
    assert liar.connect() == 0
    honest = Probe(broker.settings("agent-mapo"), "probe-honest")
    honest.client.will_set(topics.agent_state("mapo"), b"honest will", qos=1)
    assert honest.connect() == 0
    for probe in (liar, honest):  # dropped without DISCONNECT: the broker publishes their wills
        probe.client.socket().close()  # type: ignore[union-attr]
    collector.wait_for(topics.agent_state("mapo"), b"honest will")
    assert [t for t, payload in collector.received if payload == b"will of a liar"] == []
    for probe in (liar, honest):
        probe.client.loop_stop()


@pytest.mark.parametrize(
    "overrides",
    [
        {"password_file": None, "password": "not-the-password"},
        {"password_file": None, "username": None},
        {"username": "agent-jung"},  # mapo's password under jung's name
    ],
    ids=["wrong-password", "anonymous", "another-accounts-name"],
)
def test_a_client_without_the_right_password_is_refused(broker: SecureBroker, overrides: dict[str, object]):
    settings = broker.settings("agent-mapo", **overrides)
    probe = Probe(settings, "probe-refused")
    try:
        assert probe.connect() == NOT_AUTHORIZED
    finally:
        probe.close()


def test_there_is_no_plain_tcp_listener(broker: SecureBroker) -> None:
    """An MQTT CONNECT in clear gets no CONNACK; a TLS client that does not trust the CA gets no session."""
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        assert not _answers_connect(sock), "the broker answered a plain-TCP CONNECT"
    context = ssl.create_default_context()  # the system's CAs: not the broker's
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock, pytest.raises(ssl.SSLError):
        context.wrap_socket(sock, server_hostname="127.0.0.1")


def test_the_acl_grants_nothing_beyond_the_contract(broker: SecureBroker) -> None:
    """Every grant is one of the contract's filters, for the account's own district (collectors: all)."""
    acl = (broker.directory / "config" / "acl").read_text()
    grants = [line.split() for line in acl.splitlines() if line and not line.startswith("#")]
    users = [g[1] for g in grants if g[0] == "user"]
    assert users == ["collector-1", "agent-mapo", "agent-jung"]
    for district in ("mapo", "jung"):
        block = acl.split(f"user agent-{district}\n")[1].split("\n\n")[0].splitlines()
        own = {*topics.telemetry_filters(district), f"cctv/v1/{district}/live/+"}
        assert {line.removeprefix("topic write ") for line in block if "write" in line} == own
        reads = [line.removeprefix("topic read ") for line in block if "read" in line]
        assert reads == [topics.commands_filter(district)]
    passwd = (broker.directory / "config" / "passwd").read_text()
    assert [line.split(":")[0] for line in passwd.splitlines()] == users
    assert (broker.directory / "config" / "passwd").stat().st_mode & 0o077 == 0


def test_client_certificates_instead_of_passwords(tmp_path: Path) -> None:
    """The production config's documented alternative: the certificate's CN is the account, the same ACL."""
    with SecureBroker(tmp_path / "broker", ["mapo", "jung"], client_certs=True).start() as broker:
        collector = Probe(broker.cert_settings("collector-1"), "probe-collector")
        mapo = Probe(broker.cert_settings("agent-mapo"), "probe-mapo")
        try:
            assert collector.connect() == 0 and mapo.connect() == 0
            assert collector.subscribe(topics.telemetry_filters()[3]) == 1  # health
            assert mapo.publish(topics.health("jung"), b"forged") == NOT_AUTHORIZED
            assert mapo.publish(topics.health("mapo"), b"own") == 0
            collector.wait_for(topics.health("mapo"), b"own")
            assert [t for t, payload in collector.received if payload == b"forged"] == []
        finally:
            collector.close()
            mapo.close()
        # Without a certificate the TLS session ends before MQTT (TLS 1.3 says so after the handshake).
        context = ssl.create_default_context(cafile=str(broker.ca_file))
        with socket.create_connection((broker.host, broker.port), timeout=5) as raw:
            try:
                tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            except ssl.SSLError:
                return
            assert not _answers_connect(tls), "a client without a certificate got a session"


async def test_the_agent_link_says_why_the_broker_refuses_it(broker: SecureBroker) -> None:
    """What `cctv-agent healthcheck` reports: the broker's refusal; nothing with the right password."""
    links = {
        password_ok: MqttLink(
            broker.settings(
                "agent-mapo", **({} if password_ok else {"password_file": None, "password": "x"})
            ),
            f"agent-link-{password_ok}",
            will=lambda session: encode(_presence("offline", session)),
            metrics=AgentMetrics(),
            on_connected=list,
        )
        for password_ok in (False, True)
    }
    for link in links.values():
        link.start()
    try:
        await eventually(lambda: links[False].refusal is not None, 10, "the refusal")
        assert links[False].status == "refused by the broker: Not authorized"
        await eventually(lambda: links[True].connected, 10, "the right password's connection")
        assert links[True].status is None
    finally:
        for link in links.values():
            await link.stop(None)


def _presence(state: AgentPresence, session: int) -> AgentState:
    return AgentState(
        district="mapo", agent_id="mapo-1", state=state, session=session, sent_at=datetime.now(UTC)
    )
