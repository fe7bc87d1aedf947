"""Reading ONVIF answers: SOAP envelopes and faults (hardened: size-capped by the caller, no DTDs, entities or
network access), and the few facts enumeration takes from them (clock, MAC, stream profiles)."""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from datetime import datetime

from lxml import etree

from agent.errors import CameraError, CameraErrorKind
from agent.onvif_reader import StreamInfo, contract_codec
from agent.safe_xml import DtdRefusedError, parse_untrusted

S12 = "http://www.w3.org/2003/05/soap-envelope"
S11 = "http://schemas.xmlsoap.org/soap/envelope/"
TDS = "http://www.onvif.org/ver10/device/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
TT = "http://www.onvif.org/ver10/schema"
TSE = "http://www.onvif.org/ver10/search/wsdl"
TRP = "http://www.onvif.org/ver10/replay/wsdl"
NSMAP = {"s": S12, "tds": TDS, "trt": TRT, "tt": TT, "tse": TSE, "trp": TRP}

_UTC_PARTS = ("Year", "Month", "Day", "Hour", "Minute", "Second")
# How far an ONVIF clock offset can be from the truth: half its one-second resolution, plus up to 50 ms
# for the answer's transit on a district network.
CLOCK_OFFSET_ERROR_S = 0.55


class SoapFaultError(CameraError):
    """The camera answered a SOAP fault; `subcodes` are the local names of its Subcode values."""

    def __init__(self, kind: CameraErrorKind, message: str, subcodes: Sequence[str]) -> None:
        super().__init__(kind, message)
        self.subcodes = tuple(subcodes)


def parse_answer(status: int, body: bytes, name: str) -> etree._Element:
    """The first element of a SOAP answer's Body; CameraError for faults and for XML we must not read."""
    try:
        root = parse_untrusted(body)
    except DtdRefusedError as exc:
        raise CameraError("hostile", f"{name}: {exc}") from None
    except etree.XMLSyntaxError:
        if status == 401:
            raise CameraError("unauthorized", f"{name}: HTTP 401") from None
        raise CameraError("protocol", f"{name}: HTTP {status}, not XML") from None
    soap = root.tag[1:].partition("}")[0] if isinstance(root.tag, str) else ""
    if soap not in (S12, S11) or etree.QName(root).localname != "Envelope":
        raise CameraError("protocol", f"{name}: HTTP {status}, not a SOAP envelope")
    content = next((c for c in root.iterfind(f"{{{soap}}}Body/*")), None)
    if content is not None and content.tag == f"{{{soap}}}Fault":
        raise fault_error(content, name, status)
    if status == 401:
        raise CameraError("unauthorized", f"{name}: HTTP 401")
    if status != 200 or content is None:
        raise CameraError("protocol", f"{name}: HTTP {status} without an answer")
    return content


def fault_error(fault: etree._Element, name: str, status: int) -> SoapFaultError:
    subcodes = [(v.text or "").strip().rpartition(":")[2] for v in fault.iter("{*}Value", "{*}faultcode")]
    reason = " ".join((t.text or "").strip() for t in fault.iter("{*}Text", "{*}faultstring"))
    message = f"{name}: SOAP fault {'/'.join(subcodes)}: {reason[:120]}"
    unauthorized = status == 401 or any(s in ("NotAuthorized", "FailedAuthentication") for s in subcodes)
    return SoapFaultError("unauthorized" if unauthorized else "protocol", message, subcodes)


def clock_offset(answer: etree._Element) -> float | None:
    """Camera clock minus ours; None when the camera sent no UTC time."""
    camera = utc_time(answer)
    return None if camera is None else offset_from_whole_seconds(camera, time.time())


def utc_time(answer: etree._Element) -> float | None:
    """The UTCDateTime in an answer to GetSystemDateAndTime as a POSIX time; None if there is none."""
    utc = answer.find(".//tt:UTCDateTime", NSMAP)
    if utc is None:
        return None
    try:
        # A missing part reads as "": int() refuses it, as it refuses any text that is not a number.
        year, month, day, hour, minute, second = (
            int(utc.findtext(f".//tt:{p}", "", NSMAP)) for p in _UTC_PARTS
        )
        camera = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        datetime(year, month, day, hour, minute, second)  # range check: timegm accepts month 13
    except (ValueError, OverflowError):
        raise CameraError("protocol", "malformed UTCDateTime") from None
    return float(camera)


def offset_from_whole_seconds(camera_s: float, ours_s: float) -> float:
    """Camera clock minus ours, from a camera time in whole seconds (ONVIF's resolution) read at ``ours_s``.

    The camera truncates to the second: +0.5 s makes the estimate unbiased; it is then within
    ``CLOCK_OFFSET_ERROR_S`` of the true offset."""
    return camera_s + 0.5 - ours_s


def mac_address(interfaces: etree._Element) -> str | None:
    for hw in interfaces.iterfind(".//tt:Info/tt:HwAddress", NSMAP):
        if hw.text and hw.text.strip():
            return hw.text.strip()
    return None


def stream_info(profile: etree._Element, uri: str) -> StreamInfo:
    encoder = profile.find("tt:VideoEncoderConfiguration", NSMAP)
    if encoder is None:
        return StreamInfo(profile.get("token", ""), "other", 0, 0, 0.0, None, uri)

    def number(path: str) -> str:
        return (encoder.findtext(path, "", NSMAP) or "").strip()

    bitrate = number("tt:RateControl/tt:BitrateLimit")
    try:
        return StreamInfo(
            token=profile.get("token", ""),
            codec=contract_codec(number("tt:Encoding")),
            width=int(number("tt:Resolution/tt:Width") or 0),
            height=int(number("tt:Resolution/tt:Height") or 0),
            fps=float(number("tt:RateControl/tt:FrameRateLimit") or 0),
            bitrate_kbps=int(bitrate) if bitrate else None,
            uri=uri,
        )
    except ValueError:
        raise CameraError("protocol", "malformed VideoEncoderConfiguration") from None
