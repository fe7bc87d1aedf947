"""A camera's clock answer is untrusted input: odd but valid XML must give a CameraError, never a crash."""

from __future__ import annotations

import pytest

from agent.errors import CameraError
from agent.liveness import parse_utc_time
from agent.stream_check import stream_url

TT = "http://www.onvif.org/ver10/schema"


def answer(utc_inner: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="{TT}"><s:Body>'
        f"<tds:GetSystemDateAndTimeResponse xmlns:tds='http://www.onvif.org/ver10/device/wsdl'>"
        f"<tds:SystemDateAndTime><tt:UTCDateTime>{utc_inner}</tt:UTCDateTime></tds:SystemDateAndTime>"
        f"</tds:GetSystemDateAndTimeResponse></s:Body></s:Envelope>"
    ).encode()


GOOD = (
    "<tt:Time><tt:Hour>5</tt:Hour><tt:Minute>6</tt:Minute><tt:Second>7</tt:Second></tt:Time>"
    "<tt:Date><tt:Year>2026</tt:Year><tt:Month>11</tt:Month><tt:Day>25</tt:Day></tt:Date>"
)


def test_a_comment_inside_the_time_is_ignored() -> None:
    assert parse_utc_time(answer("<!-- vendor build 42 -->" + GOOD)) == 1795583167.0


@pytest.mark.parametrize(
    "inner",
    [
        GOOD.replace("2026", "99999999999999999999"),
        GOOD.replace("<tt:Month>11", "<tt:Month>13"),
        "<tt:Time/>",
    ],
    ids=["year-overflow", "month-13", "missing-fields"],
)
def test_impossible_times_are_protocol_errors(inner: str) -> None:
    with pytest.raises(CameraError) as err:
        parse_utc_time(answer(inner))
    assert err.value.kind == "protocol"


def test_credentials_only_go_to_the_host_we_reached() -> None:
    url = stream_url("rtsp://203.0.113.9:554/live", "admin", "pw", host="127.20.0.5")
    assert url == "rtsp://admin:pw@127.20.0.5:554/live"
    assert stream_url("rtsp://x/live", "a", "b", host="fd00::5") == "rtsp://a:b@[fd00::5]/live"
