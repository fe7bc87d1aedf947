from __future__ import annotations

import io
import json
import logging

from common import jsonlog
from contract.errors import ContractError


def _log_line(message: str, *args: object, **extra: object) -> dict:
    stream = io.StringIO()
    jsonlog.setup("INFO", stream)
    logging.getLogger("test.jsonlog").info(message, *args, extra=extra)
    return json.loads(stream.getvalue().strip())


def test_lines_are_json_with_bound_ids():
    line = _log_line("camera %s checked", "gangnam-00001", camera="gangnam-00001", district="gangnam")
    assert line["msg"] == "camera gangnam-00001 checked"
    assert line["camera"] == "gangnam-00001" and line["district"] == "gangnam"
    assert line["level"] == "info"


def test_credentials_and_addresses_never_reach_the_log():
    line = _log_line(
        "open %s failed, password=hunter2",
        "rtsp://admin:hunter2@10.1.2.3:554/stream1",
        url="http://10.9.8.7/x",
    )
    text = json.dumps(line)
    assert "hunter2" not in text
    assert "10.1.2.3" not in text and "10.9.8.7" not in text
    assert "rtsp://***@[addr]:554/stream1" in line["msg"]


def test_exceptions_are_redacted_too():
    stream = io.StringIO()
    jsonlog.setup("INFO", stream)
    try:
        raise ConnectionError("cannot reach 192.168.0.64 with secret_key=abc123")
    except ConnectionError:
        logging.getLogger("t").exception("failed")
    text = stream.getvalue()
    assert "192.168.0.64" not in text and "abc123" not in text


def test_ipv6_addresses_are_redacted_but_times_are_not():
    text = jsonlog.redact("camera fe80::1ff:fe23:4567:890a and 2001:db8:0:0:1:0:0:1 failed at 12:30:45.120")
    assert "fe80" not in text and "2001:db8" not in text
    assert "12:30:45.120" in text


def test_structured_extras_and_common_secret_shapes_are_redacted():
    line = _log_line(
        "config %s, header Authorization: Basic YWRtaW46aHVudGVyMg==, <wsse:Password>hunter2</wsse:Password>",
        {"password": "hunter2"},
        addr=("10.1.2.3", 80),
        cam={"host": "10.9.9.9", "password": "hunter2"},
    )
    text = json.dumps(line)
    assert "hunter2" not in text and "YWRtaW46" not in text
    assert "10.1.2.3" not in text and "10.9.9.9" not in text


def test_a_password_with_an_at_sign_is_removed_whole():
    assert jsonlog.redact("rtsp://admin:p@ss@10.0.0.1/s") == "rtsp://***@[addr]/s"


def test_a_flood_of_rejections_is_logged_once_per_reason_and_interval(caplog):
    now = [0.0]
    rejects = jsonlog.RejectLog(logging.getLogger("test.rejects"), interval_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.rejects"):
        for _ in range(1000):
            rejects.note(ContractError("invalid_json", "not JSON"), "cctv/v1/gangnam/health")
            try:
                raise TypeError("a bug")
            except TypeError:
                rejects.unexpected("cctv/v1/gangnam/health")
        assert [(r.reason, bool(r.exc_info)) for r in caplog.records] == [  # type: ignore[attr-defined]
            ("invalid_json", False),
            ("internal_error", True),
        ]
        now[0] = 61.0
        rejects.note(ContractError("invalid_json", "not JSON"), "cctv/v1/gangnam/health")
    assert caplog.records[-1].getMessage().endswith("(999 more since last report)")
