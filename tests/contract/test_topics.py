from __future__ import annotations

import pytest
from paho.mqtt.client import topic_matches_sub

from contract import ContractError, topics


def test_topics_build_and_parse_back():
    assert topics.parse(topics.agent_state("gangnam")) == topics.TopicRef("agent_state", "gangnam")
    assert topics.parse(topics.camera_status("jongno", "jongno-00001")).camera_id == "jongno-00001"
    assert topics.parse(topics.camera_meta("jongno", "c1")).kind == "camera_meta"
    assert topics.parse(topics.command("mapo", "arm")).command == "arm"
    assert topics.parse(topics.clip("mapo", "req-1")).request_id == "req-1"
    assert topics.parse(topics.health("mapo")).kind == "health"


@pytest.mark.parametrize("bad", ["Gangnam", "gang/nam", "+", "#", "", "a" * 40])
def test_district_that_would_break_the_topic_tree_is_refused(bad: str):
    with pytest.raises(ValueError, match="district"):
        topics.health(bad)


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "a b", ""])
def test_camera_id_that_would_break_the_topic_tree_is_refused(bad: str):
    with pytest.raises(ValueError, match="camera id"):
        topics.camera_status("gangnam", bad)


@pytest.mark.parametrize(
    "topic",
    ["cctv/v2/gangnam/health", "cctv/v1/gangnam", "cctv/v1/gangnam/cmd/reboot", "other/v1/gangnam/health"],
)
def test_foreign_topics_are_unknown(topic: str):
    with pytest.raises(ContractError) as err:
        topics.parse(topic)
    assert err.value.reason == "unknown_topic"


AGENT_TOPICS = [
    topics.agent_state("mapo"),
    topics.camera_meta("mapo", "c1"),
    topics.camera_status("mapo", "c1"),
    topics.health("mapo"),
    topics.clip("mapo", "req-1"),
]


def test_collector_filters_cover_every_agent_topic():
    filters = topics.telemetry_filters()
    for topic in AGENT_TOPICS:
        assert any(topic_matches_sub(f, topic) for f in filters), topic
    assert not any(topic_matches_sub(f, topics.command("mapo", "clip")) for f in filters)  # agents' inbox
    assert not any(topic_matches_sub(f, t) for f in topics.telemetry_filters("jongno") for t in AGENT_TOPICS)
    assert topics.shared("collectors", filters[0]) == "$share/collectors/cctv/v1/+/agent/state"


def test_a_trailing_newline_is_not_part_of_a_valid_id():
    with pytest.raises(ValueError):
        topics.camera_meta("gangnam\n", "cam1")
    with pytest.raises(ValueError):
        topics.camera_meta("gangnam", "cam1\n")
    with pytest.raises(ContractError):
        topics.parse("cctv/v1/gangnam\n/health")
