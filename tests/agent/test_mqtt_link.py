"""The agent's MQTT link against a real Mosquitto: every connection gets a new presence session, and the last
will the broker publishes when a connection drops carries the session of that connection."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import pytest

from agent.metrics import AgentMetrics
from agent.mqtt_link import MqttLink
from common.mqtt_settings import MqttSettings
from contract import topics
from contract.codec import Delivery, encode
from contract.messages import AgentPresence, AgentState
from tests.integration.conftest import Recorder, eventually
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

TOPIC = topics.agent_state("gangnam")


def presence(state: AgentPresence, session: int) -> Delivery:
    return encode(
        AgentState(
            district="gangnam", agent_id="agent-1", state=state, session=session, sent_at=datetime.now(UTC)
        )
    )


def presences(recorder: Recorder) -> list[tuple[str, int]]:
    """(state, session) of every presence the broker delivered, in order."""
    prefix = TOPIC.encode() + b" "
    found = []
    for raw in list(recorder.raw):
        if raw.startswith(prefix):
            payload = json.loads(raw[len(prefix) :])
            found.append((payload["state"], payload["session"]))
    return found


async def test_each_connection_has_a_new_session_and_its_will_carries_it(mosquitto: Mosquitto) -> None:
    recorder = Recorder(mosquitto.port)
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, reconnect_max_s=1)
    link: MqttLink = MqttLink(
        settings,
        "agent-1",
        will=lambda session: presence("offline", session),
        metrics=AgentMetrics(),
        on_connected=lambda: [presence("online", link.session)],
    )
    link.start()
    try:
        for _ in range(2):
            await eventually(lambda: presences(recorder)[-1:] == [("online", link.session)], 10, "online")
            # The network drops without a DISCONNECT: the broker publishes the will of this connection.
            link._client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            dropped = link.session
            await eventually(lambda d=dropped: ("offline", d) in presences(recorder), 10, "the will")
        await eventually(lambda: len(presences(recorder)) >= 5, 10, "the third connection's online")
    finally:
        await link.stop(None)
        recorder.close()
    seen = presences(recorder)
    assert [state for state, _ in seen] == ["online", "offline"] * 2 + ["online"]
    first, second, third = (session for state, session in seen if state == "online")
    assert first < second < third
    assert seen[1] == ("offline", first) and seen[3] == ("offline", second)
