"""Reading XML from peers we do not trust (cameras, WS-Discovery datagrams, SOAP requests to camsim).

One hardened parser: no DTDs, entities, network access or huge trees; comments and processing instructions
are dropped, so readers see only elements and text. Callers cap the size and map the two errors to their
own taxonomy.
"""

from __future__ import annotations

import re

from lxml import etree

# Sharing one parser between threads is safe in lxml (it locks), only slower than one per thread.
_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class DtdRefusedError(ValueError):
    """The document declares a DTD or entities; we never read those (XXE, billion laughs)."""


def parse_untrusted(data: bytes) -> etree._Element:
    """The root element of ``data``; DtdRefusedError for a DTD, etree.XMLSyntaxError for malformed XML."""
    if _DTD.search(data):
        raise DtdRefusedError("document type declarations are not accepted")
    root = etree.fromstring(data, _PARSER)
    if root.getroottree().docinfo.internalDTD is not None:  # e.g. a DOCTYPE in UTF-16, unseen by the scan
        raise DtdRefusedError("document type declarations are not accepted")
    return root
