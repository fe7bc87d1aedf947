"""SOAP 1.2 for the simulated camera: a hardened request parser, response templates and faults.

Requests come from untrusted clients: they are read with the agent's hardened parser (agent/safe_xml.py),
which refuses any document with a DOCTYPE. Responses are plain string templates (shared by every server in
the process) shaped after the ONVIF ver10 device and media schemas that onvif-zeep-async parses.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from agent.safe_xml import DtdRefusedError, parse_untrusted

MAX_BODY_BYTES = 64 * 1024

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_DEVICE = "http://www.onvif.org/ver10/device/wsdl"
NS_MEDIA = "http://www.onvif.org/ver10/media/wsdl"
NS_SEARCH = "http://www.onvif.org/ver10/search/wsdl"
NS_REPLAY = "http://www.onvif.org/ver10/replay/wsdl"
NS_SCHEMA = "http://www.onvif.org/ver10/schema"
NS_ERROR = "http://www.onvif.org/ver10/error"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"


class SoapError(Exception):
    """A request the camera answers with a SOAP fault.

    `subcodes` are ONVIF error QNames with the `ter:` prefix, outermost first.
    """

    def __init__(self, code: str, subcodes: tuple[str, ...], reason: str, http_status: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.subcodes = subcodes
        self.reason = reason
        # SOAP 1.2 HTTP binding: Sender faults are 400, everything else 500.
        self.http_status = http_status or (400 if code == "Sender" else 500)


def not_authorized(reason: str = "Sender not authorized", http_status: int = 400) -> SoapError:
    return SoapError("Sender", ("ter:NotAuthorized",), reason, http_status)


def action_not_supported(action: str) -> SoapError:
    return SoapError("Receiver", ("ter:ActionNotSupported",), f"Optional action not implemented: {action}")


def invalid_arg(subcode: str, reason: str) -> SoapError:
    return SoapError("Sender", ("ter:InvalidArgVal", subcode), reason)


def malformed(reason: str) -> SoapError:
    return SoapError("Sender", ("ter:WellFormed",), reason)


@dataclass(slots=True)
class UsernameToken:
    """The WS-Security UsernameToken of a request, as sent (nothing verified yet)."""

    username: str
    password: str
    password_type: str
    nonce_b64: str
    created: str


@dataclass(slots=True)
class SoapRequest:
    action: str  # local name of the Body's first child, e.g. "GetProfiles"
    namespace: str  # its namespace, e.g. NS_MEDIA
    body: etree._Element  # that child element
    token: UsernameToken | None


def parse_envelope(data: bytes) -> SoapRequest:
    """Parse a SOAP 1.2 request; raise SoapError for anything a camera would refuse."""
    if len(data) > MAX_BODY_BYTES:
        raise SoapError("Sender", (), "Request entity too large", 413)
    try:
        root = parse_untrusted(data)
    except DtdRefusedError:
        raise malformed("DTDs and entity declarations are not allowed") from None
    except etree.XMLSyntaxError as exc:
        raise malformed(f"Malformed XML: {exc.msg}") from None
    if root.tag == f"{{{NS_SOAP11}}}Envelope":
        raise SoapError("VersionMismatch", (), "Only SOAP 1.2 is supported")
    if root.tag != f"{{{NS_SOAP12}}}Envelope":
        raise malformed("Not a SOAP 1.2 envelope")
    body = root.find(f"{{{NS_SOAP12}}}Body")
    action_el = None if body is None else next((c for c in body if isinstance(c.tag, str)), None)
    if action_el is None:
        raise malformed("Empty SOAP Body")
    qname = etree.QName(action_el)
    return SoapRequest(qname.localname, qname.namespace or "", action_el, _username_token(root))


def _username_token(root: etree._Element) -> UsernameToken | None:
    token = root.find(f"{{{NS_SOAP12}}}Header/{{{NS_WSSE}}}Security/{{{NS_WSSE}}}UsernameToken")
    if token is None:
        return None
    password = token.find(f"{{{NS_WSSE}}}Password")
    return UsernameToken(
        username=token.findtext(f"{{{NS_WSSE}}}Username") or "",
        password=(password.text or "") if password is not None else "",
        password_type=(password.get("Type") or "") if password is not None else "",
        nonce_b64=token.findtext(f"{{{NS_WSSE}}}Nonce") or "",
        created=token.findtext(f"{{{NS_WSU}}}Created") or "",
    )


def child_text(el: etree._Element, *path: str) -> str | None:
    """Text of a descendant by local names, ignoring namespaces (clients differ in prefixes)."""
    node = el
    for name in path:
        found = next((c for c in node if isinstance(c.tag, str) and etree.QName(c).localname == name), None)
        if found is None:
            return None
        node = found
    return (node.text or "").strip()


_ENVELOPE_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:tt="{NS_SCHEMA}" xmlns:tds="{NS_DEVICE}" '
    f'xmlns:trt="{NS_MEDIA}" xmlns:tse="{NS_SEARCH}" xmlns:trp="{NS_REPLAY}" xmlns:ter="{NS_ERROR}">'
    "<env:Body>"
)
_ENVELOPE_TAIL = "</env:Body></env:Envelope>"


def envelope(body: str) -> bytes:
    return (_ENVELOPE_HEAD + body + _ENVELOPE_TAIL).encode()


def fault_envelope(err: SoapError) -> bytes:
    nested = ""  # build the Subcode chain from the innermost outwards
    for subcode in reversed(err.subcodes):
        nested = f"<env:Subcode><env:Value>{subcode}</env:Value>{nested}</env:Subcode>"
    code = f"<env:Value>env:{err.code}</env:Value>{nested}"
    return envelope(
        f"<env:Fault><env:Code>{code}</env:Code><env:Reason>"
        f'<env:Text xml:lang="en">{escape(err.reason)}</env:Text></env:Reason></env:Fault>'
    )


def text(value: object) -> str:
    """Escape a value for element text."""
    return escape(str(value))


def attr(value: object) -> str:
    """Escape a value for an attribute, quotes included."""
    return quoteattr(str(value))


# --- Device service response templates (ver10 device WSDL / onvif.xsd element order) ---

DEVICE_INFORMATION = (
    "<tds:GetDeviceInformationResponse><tds:Manufacturer>{manufacturer}</tds:Manufacturer>"
    "<tds:Model>{model}</tds:Model><tds:FirmwareVersion>{firmware}</tds:FirmwareVersion>"
    "<tds:SerialNumber>{serial}</tds:SerialNumber><tds:HardwareId>{hardware_id}</tds:HardwareId>"
    "</tds:GetDeviceInformationResponse>"
)

_DATE_TIME = (
    "<tt:Time><tt:Hour>{0.tm_hour}</tt:Hour><tt:Minute>{0.tm_min}</tt:Minute><tt:Second>{0.tm_sec}</tt:Second>"
    "</tt:Time><tt:Date><tt:Year>{0.tm_year}</tt:Year><tt:Month>{0.tm_mon}</tt:Month>"
    "<tt:Day>{0.tm_mday}</tt:Day></tt:Date>"
)

SYSTEM_DATE_AND_TIME = (
    "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
    "<tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>KST-9</tt:TZ></tt:TimeZone>"
    "<tt:UTCDateTime>" + _DATE_TIME.replace("{0.", "{utc.") + "</tt:UTCDateTime>"
    "<tt:LocalDateTime>" + _DATE_TIME.replace("{0.", "{local.") + "</tt:LocalDateTime>"
    "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
)

_DEVICE_CAPS = (
    "<tt:Device><tt:XAddr>{device_xaddr}</tt:XAddr><tt:Network><tt:IPFilter>false</tt:IPFilter>"
    "<tt:ZeroConfiguration>false</tt:ZeroConfiguration><tt:IPVersion6>false</tt:IPVersion6>"
    "<tt:DynDNS>false</tt:DynDNS></tt:Network><tt:System><tt:DiscoveryResolve>true</tt:DiscoveryResolve>"
    "<tt:DiscoveryBye>true</tt:DiscoveryBye><tt:RemoteDiscovery>false</tt:RemoteDiscovery>"
    "<tt:SystemBackup>false</tt:SystemBackup><tt:SystemLogging>false</tt:SystemLogging>"
    "<tt:FirmwareUpgrade>false</tt:FirmwareUpgrade><tt:SupportedVersions><tt:Major>2</tt:Major>"
    "<tt:Minor>40</tt:Minor></tt:SupportedVersions></tt:System></tt:Device>"
)
_MEDIA_CAPS = (
    "<tt:Media><tt:XAddr>{media_xaddr}</tt:XAddr><tt:StreamingCapabilities>"
    "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
    "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
)


_RECORDING_CAPS = (
    "<tt:Extension><tt:Search><tt:XAddr>{search_xaddr}</tt:XAddr><tt:MetadataSearch>false</tt:MetadataSearch>"
    "</tt:Search><tt:Replay><tt:XAddr>{replay_xaddr}</tt:XAddr></tt:Replay></tt:Extension>"
)


def capabilities(
    category: str, device_xaddr: str, media_xaddr: str, recording_xaddrs: tuple[str, str] | None = None
) -> str:
    """GetCapabilitiesResponse for one category ("All", "Device" or "Media"); `recording_xaddrs` (Search,
    Replay) for a Profile G device, in the Extension of "All"."""
    parts = []
    if category in ("All", "Device"):
        parts.append(_DEVICE_CAPS.format(device_xaddr=text(device_xaddr)))
    if category in ("All", "Media"):
        parts.append(_MEDIA_CAPS.format(media_xaddr=text(media_xaddr)))
    if category == "All" and recording_xaddrs is not None:
        search, replay = recording_xaddrs
        parts.append(_RECORDING_CAPS.format(search_xaddr=text(search), replay_xaddr=text(replay)))
    caps = "".join(parts)
    return (
        f"<tds:GetCapabilitiesResponse><tds:Capabilities>{caps}</tds:Capabilities>"
        "</tds:GetCapabilitiesResponse>"
    )


_SERVICE = (
    "<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{xaddr}</tds:XAddr>"
    "<tds:Version><tt:Major>2</tt:Major><tt:Minor>{minor}</tt:Minor></tds:Version></tds:Service>"
)


def services(device_xaddr: str, media_xaddr: str, recording_xaddrs: tuple[str, str] | None = None) -> str:
    device = _SERVICE.format(ns=NS_DEVICE, xaddr=text(device_xaddr), minor=40)
    media = _SERVICE.format(ns=NS_MEDIA, xaddr=text(media_xaddr), minor=40)
    recording = ""
    if recording_xaddrs is not None:
        search, replay = recording_xaddrs
        recording = _SERVICE.format(ns=NS_SEARCH, xaddr=text(search), minor=42)
        recording += _SERVICE.format(ns=NS_REPLAY, xaddr=text(replay), minor=42)
    return f"<tds:GetServicesResponse>{device}{media}{recording}</tds:GetServicesResponse>"


NETWORK_INTERFACES = (
    '<tds:GetNetworkInterfacesResponse><tds:NetworkInterfaces token="eth0"><tt:Enabled>true</tt:Enabled>'
    "<tt:Info><tt:Name>eth0</tt:Name><tt:HwAddress>{mac}</tt:HwAddress><tt:MTU>1500</tt:MTU></tt:Info>"
    "<tt:IPv4><tt:Enabled>true</tt:Enabled><tt:Config><tt:Manual><tt:Address>{address}</tt:Address>"
    "<tt:PrefixLength>24</tt:PrefixLength></tt:Manual><tt:DHCP>false</tt:DHCP></tt:Config></tt:IPv4>"
    "</tds:NetworkInterfaces></tds:GetNetworkInterfacesResponse>"
)

_SCOPE = "<tds:Scopes><tt:ScopeDef>{kind}</tt:ScopeDef><tt:ScopeItem>{item}</tt:ScopeItem></tds:Scopes>"


def scopes(fixed: list[str], configurable: list[str]) -> str:
    items = [_SCOPE.format(kind="Fixed", item=text(s)) for s in fixed]
    items += [_SCOPE.format(kind="Configurable", item=text(s)) for s in configurable]
    return f"<tds:GetScopesResponse>{''.join(items)}</tds:GetScopesResponse>"


HOSTNAME = (
    "<tds:GetHostnameResponse><tds:HostnameInformation><tt:FromDHCP>false</tt:FromDHCP>"
    "<tt:Name>{name}</tt:Name></tds:HostnameInformation></tds:GetHostnameResponse>"
)

# --- Media ver10 response templates ---

VIDEO_SOURCE_CONFIGURATION = (
    '<tt:VideoSourceConfiguration token="vsc0"><tt:Name>VideoSourceConfig</tt:Name>'
    "<tt:UseCount>2</tt:UseCount><tt:SourceToken>vs0</tt:SourceToken>"
    '<tt:Bounds x="0" y="0" width="{width}" height="{height}"/></tt:VideoSourceConfiguration>'
)

# `{tag}` is "tt:VideoEncoderConfiguration" inside a profile and "trt:Configurations" in a list.
# ver10 only knows JPEG/MPEG4/H264; H.265 cameras really do answer "H265" here (no H264 block).
VIDEO_ENCODER_CONFIGURATION = (
    "<{tag} token={ref}><tt:Name>{name}</tt:Name><tt:UseCount>1</tt:UseCount>"
    "<tt:Encoding>{encoding}</tt:Encoding><tt:Resolution><tt:Width>{width}</tt:Width>"
    "<tt:Height>{height}</tt:Height></tt:Resolution><tt:Quality>4</tt:Quality><tt:RateControl>"
    "<tt:FrameRateLimit>{fps}</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval>"
    "<tt:BitrateLimit>{bitrate}</tt:BitrateLimit></tt:RateControl>{h264}<tt:Multicast><tt:Address>"
    "<tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address><tt:Port>0</tt:Port>"
    "<tt:TTL>1</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
    "<tt:SessionTimeout>PT60S</tt:SessionTimeout></{tag}>"
)
H264_BLOCK = "<tt:H264><tt:GovLength>{gop}</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264>"

PROFILE = '<trt:Profiles token={ref} fixed="true"><tt:Name>{name}</tt:Name>{source}{encoder}</trt:Profiles>'

MEDIA_URI = (
    "<trt:{response}><trt:MediaUri><tt:Uri>{uri}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
    "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
    "</trt:{response}>"
)
