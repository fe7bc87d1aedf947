"""Hostile payloads for the wire contract, from a deterministic generator (hypothesis is not installed here),
shared by the codec tests and the flood test.

Starting from a valid message, `variants()` gives every field (present or optional, and the fields of the
first element of a nested list) each wrong kind of value, removes each field, adds an unknown one, and
replaces the whole payload with hostile roots, encodings and bytes: NaN and Infinity literals, numbers beyond
any range, invalid UTF-8, UTF-16, a byte-order mark, lone surrogates, nesting deeper than any parser should
follow, duplicate keys, truncation, oversize. Each variant says which reason it must be rejected with when
that is certain; `None` where the value may be valid for that field (an empty name, a null optional).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from contract.codec import MAX_PAYLOAD_BYTES
from contract.topics import parse

_HOLE = "\x00hostile\x00"

# (name, JSON text, the reason wherever it stands, if it is certain)
WRONG_VALUES: list[tuple[str, str, str | None]] = [
    ("null", "null", None),
    ("true", "true", None),
    ("zero", "0", None),
    ("negative", "-1", None),
    ("fraction", "1.5", None),
    ("2**64", str(2**64), None),
    ("4,400 digits", "9" * 4400, "invalid_json"),  # beyond what a parser turns into an int
    ("1e400", "1e400", None),  # a float overflowing to infinity
    ("NaN", "NaN", "invalid_json"),
    ("Infinity", "Infinity", "invalid_json"),
    ("-Infinity", "-Infinity", "invalid_json"),
    ("empty string", '""', None),
    ("long string", json.dumps("x" * 600), None),
    ("NUL in a string", '"a\\u0000b"', None),
    ("lone surrogate", '"\\ud800"', "invalid_json"),
    ("slashes and wildcards", '"a/+/#"', None),
    ("digits as a string", '"12345"', None),
    ("a time as a string", '"2026-11-25T05:00:01Z"', None),
    ("empty list", "[]", None),
    ("empty object", "{}", None),
    ("list of lists", "[[1], [2]]", None),
    ("lists nested 300 deep", "[" * 300 + "]" * 300, "invalid_json"),
    ("objects nested 300 deep", '{"a": ' * 300 + "1" + "}" * 300, "invalid_json"),
]


@dataclass(frozen=True)
class Hostile:
    why: str
    topic: str
    payload: bytes
    reason: str | None  # the ContractError reason it must get; None when it may also be valid


def variants(topic: str, valid: dict[str, Any], fields: list[str]) -> Iterator[Hostile]:
    """Every hostile variant of `valid` (a payload that passes on `topic`); `fields`: all the message's
    field names, present or not."""
    yield from _field_variants(topic, valid, fields)
    yield from _nested_variants(topic, valid)
    yield from _mismatch_variants(topic, valid)
    yield from _root_variants(topic, valid)


def _field_variants(topic: str, valid: dict[str, Any], fields: list[str]) -> Iterator[Hostile]:
    for name in fields:
        for label, text, reason in WRONG_VALUES:
            # anything but the integer 1 is no version we know
            certain = "unknown_version" if name == "v" and reason is None else reason
            yield Hostile(f"{name} = {label}", topic, _with(valid, [name], text), certain)
        if name in valid:
            rest = {k: v for k, v in valid.items() if k != name}
            yield Hostile(f"{name} missing", topic, _dump(rest), "unknown_version" if name == "v" else None)
    yield Hostile("an unknown field", topic, _dump({**valid, "host": "10.0.0.1"}), "invalid_payload")


def _nested_variants(topic: str, valid: dict[str, Any]) -> Iterator[Hostile]:
    for name, value in valid.items():
        if not (isinstance(value, list) and value and isinstance(value[0], dict)):
            continue
        for field in value[0]:
            for label, text, reason in WRONG_VALUES:
                payload = _with(valid, [name, 0, field], text)
                yield Hostile(f"{name}[0].{field} = {label}", topic, payload, reason)
        many = {**valid, name: [value[0]] * 20_001}  # more entries than any list may hold
        yield Hostile(f"{name} with 20,001 entries", topic, _dump(many), None)


def _mismatch_variants(topic: str, valid: dict[str, Any]) -> Iterator[Hostile]:
    """Valid payloads that do not belong on their topic."""
    other_district = _dump({**valid, "district": "jongno"})
    yield Hostile("another district's payload", topic, other_district, "district_mismatch")
    ref = parse(topic)
    for field, in_topic in (("camera_id", ref.camera_id), ("request_id", ref.request_id)):
        if in_topic is not None:
            other = _dump({**valid, field: f"other-{in_topic}"})
            yield Hostile(f"another {field} than the topic's", topic, other, "topic_mismatch")


def _root_variants(topic: str, valid: dict[str, Any]) -> Iterator[Hostile]:
    text = json.dumps(valid, ensure_ascii=False)
    good = text.encode()
    limit = MAX_PAYLOAD_BYTES[parse(topic).kind]
    ours = f'"district": "{valid["district"]}"'
    theirs_first = text.replace(ours, '"district": "jongno"', 1)[:-1] + f", {ours}}}"
    theirs_last = text[:-1] + ', "district": "jongno"}'
    raw: list[tuple[str, bytes, str]] = [
        ('{"v": []}', b'{"v": []}', "unknown_version"),
        ('{"v": {}}', b'{"v": {}}', "unknown_version"),
        ("v as a string", good.replace(b'"v": 1', b'"v": "1"', 1), "unknown_version"),
        ("v = true", good.replace(b'"v": 1', b'"v": true', 1), "unknown_version"),
        ("v = 1.0", good.replace(b'"v": 1', b'"v": 1.0', 1), "unknown_version"),
        ("v = 2", good.replace(b'"v": 1', b'"v": 2', 1), "unknown_version"),
        ("empty payload", b"", "invalid_json"),
        ("whitespace only", b" \n\t ", "invalid_json"),
        ("truncated", good[: len(good) // 2], "invalid_json"),
        ("trailing garbage", good + b" }", "invalid_json"),
        ("two objects", good + good, "invalid_json"),
        ("invalid UTF-8", good.replace(b'"v": 1', b'"\xff\xfe": 1, "v": 1', 1), "invalid_json"),
        ("UTF-16", text.encode("utf-16"), "invalid_json"),
        ("UTF-8 byte-order mark", b"\xef\xbb\xbf" + good, "invalid_json"),
        ("single quotes", good.replace(b'"', b"'"), "invalid_json"),
        ("a comment", b"/* hi */ " + good, "invalid_json"),
        ("deep nesting at the root", b"[" * (limit // 2) + b"]" * (limit // 2), "invalid_json"),
        ("deep nesting in v", b'{"v": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_json"),
        ("oversized", good + b" " * (limit + 1 - len(good)), "oversized"),
        # duplicate keys: the last one counts, in both of the codec's parsing steps
        ("duplicate district, another last", theirs_last.encode(), "district_mismatch"),
        ("duplicate district, ours last", theirs_first.encode(), None),
    ]
    for label, payload, reason in raw:
        yield Hostile(label, topic, payload, reason)
    for label, value, reason in WRONG_VALUES:
        root_reason = reason or ("unknown_version" if value == "{}" else "invalid_json")
        yield Hostile(f"the payload is {label}", topic, value.encode(), root_reason)


def _with(valid: dict[str, Any], path: list[str | int], text: str) -> bytes:
    """`valid` with the value at `path` replaced by raw JSON `text` (which json.dumps could not write)."""
    data = json.loads(json.dumps(valid))
    node: Any = data
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = _HOLE
    return json.dumps(data, ensure_ascii=False).replace(json.dumps(_HOLE), text).encode()


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()
