"""Hostile XML that cameras (or attackers posing as cameras) may send, shared by the parser tests."""

from __future__ import annotations

ENVELOPE = b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'>"

# Billion laughs: ten levels of ten-fold entity expansion (a GB of text from a few hundred bytes).
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "ha">'
    + b"".join(
        b'<!ENTITY %c "&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;">'
        % ((ord("a") + i + 1,) + (ord("a") + i,) * 10)
        for i in range(9)
    )
    + b"]>"
    + ENVELOPE
    + b"<s:Body>&j;</s:Body></s:Envelope>"
)


def utf16(xml: bytes) -> bytes:
    """The same document in UTF-16, where a byte scan for `<!DOCTYPE` sees nothing."""
    return xml.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
