"""The golden examples are what other teams build against: both sides must parse them and round-trip them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract import ContractError, topics
from contract.codec import MAX_PAYLOAD_BYTES, decode, encode
from contract.schema import render

HERE = Path(__file__).parent
GOLDEN = sorted((HERE / "golden").glob("*.json"))
BAD = json.loads((HERE / "bad_examples.json").read_text(encoding="utf-8"))


def test_there_is_a_golden_example_per_message():
    assert {p.stem for p in GOLDEN} == {
        "agent_state",
        "camera_meta",
        "camera_status",
        "health_snapshot",
        "clip_request",
        "arm_request",
        "clip_update",
        "live_request",
        "live_update",
    }


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_example_round_trips(path: Path):
    example = json.loads(path.read_text(encoding="utf-8"))
    payload = json.dumps(example["payload"], ensure_ascii=False).encode()
    message = decode(example["topic"], payload)
    delivery = encode(message)
    assert delivery.topic == example["topic"]
    assert delivery.retain == example["retain"]
    again = decode(delivery.topic, delivery.payload)
    assert again == message
    # Nothing is lost or invented: the re-encoded JSON holds the same values.
    assert json.loads(delivery.payload) == json.loads(again.model_dump_json(exclude_none=True))
    assert set(json.loads(delivery.payload)) == set(example["payload"])


@pytest.mark.parametrize("case", BAD, ids=[c["why"] for c in BAD])
def test_bad_example_is_rejected_with_its_reason(case: dict):
    with pytest.raises(ContractError) as err:
        decode(case["topic"], _bad_payload(case))
    assert err.value.reason == case["reason"]


def _bad_payload(case: dict) -> bytes:
    """`payload` is a JSON value; `raw` the exact text, for what a JSON value cannot hold (NaN, duplicate
    keys); `raw_hex` the bytes, for what is not even UTF-8 text."""
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"])
    if "raw" in case:
        return case["raw"].encode()
    return json.dumps(case["payload"]).encode()


@pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe", b"[1, 2]", b"null"])
def test_payload_that_is_not_a_json_object_is_invalid_json(payload: bytes):
    with pytest.raises(ContractError) as err:
        decode(topics.agent_state("gangnam"), payload)
    assert err.value.reason == "invalid_json"


def test_oversized_payload_is_rejected_before_parsing():
    limit = MAX_PAYLOAD_BYTES["camera_status"]
    with pytest.raises(ContractError) as err:
        decode(topics.camera_status("gangnam", "cam-1"), b" " * (limit + 1))
    assert err.value.reason == "oversized"


def test_committed_json_schemas_are_up_to_date():
    docs = HERE.parents[1] / "docs" / "contract"
    for name, text in render().items():
        assert (docs / name).read_text(encoding="utf-8") == text, f"run `python -m contract.schema` ({name})"


def test_deeply_nested_json_is_invalid_json_not_a_crash():
    payload = b'{"v": 1, "a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(ContractError) as err:
        decode(topics.agent_state("gangnam"), payload)
    assert err.value.reason == "invalid_json"
