"""Hostile payloads (tests/hostile_json.py) against the codec: each is rejected with a ContractError and its
reason, or it is valid and passes intact; never another exception, whatever the payload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from contract import ContractError
from contract.codec import decode, encode
from contract.errors import ContractErrorReason
from contract.messages import AnyMessage
from contract.schema import SCHEMAS
from tests.hostile_json import variants

GOLDEN = Path(__file__).parent / "golden"
REASONS = set(get_args(ContractErrorReason))


@pytest.mark.parametrize("name", sorted(n for n in SCHEMAS if n != "manifest"))  # wire messages only
def test_every_hostile_payload_is_rejected_with_its_reason_or_passes_intact(name: str) -> None:
    example = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    cases = list(variants(example["topic"], example["payload"], list(SCHEMAS[name].model_fields)))
    problems, rejected = [], 0
    for case in cases:
        try:
            message = decode(case.topic, case.payload)
        except ContractError as exc:
            rejected += 1
            if exc.reason not in REASONS or case.reason not in (None, exc.reason):
                problems.append(f"{case.why}: {exc.reason}, expected {case.reason}")
            continue
        except BaseException as exc:  # anything else escaping decode is the bug looked for
            problems.append(f"{case.why}: {type(exc).__name__}: {str(exc)[:100]}")
            continue
        if case.reason is not None:
            problems.append(f"{case.why}: accepted, expected {case.reason}")
        elif not _passes_intact(message):
            problems.append(f"{case.why}: accepted, but does not survive being sent on")
    assert problems == []
    assert len(cases) > 200 and rejected > len(cases) // 2  # the generator did produce a flood


def _passes_intact(message: AnyMessage) -> bool:
    delivery = encode(message)
    return decode(delivery.topic, delivery.payload) == message
