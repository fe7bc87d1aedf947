"""JSON-lines logging shared by agent, collector and simulator, with secrets and camera addresses redacted.

Redaction happens in the formatter, so no call site can forget it: credentials in URLs, `password=`-style
pairs and IP addresses (camera addresses must not leave the district, not even through a log shipper).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
_SECRET_PAIR = re.compile(
    r"(?P<key>password|passwd|secret|token|secret_key|access_key)(?P<sep>\s*[=:]\s*)(?P<q>['\"]?)[^\s'\",}]+",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
# IPv6: four or more colon-separated hex groups, or the `::` shorthand. Times such as 12:30:45 have only
# three groups and are left alone; a MAC address (six groups) is redacted too, which is no loss.
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}(?![\w:])|(?<![\w:])[0-9A-Fa-f:]*::[0-9A-Fa-f:]+"
)

# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """Remove credentials and IP addresses from free text."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    text = _SECRET_PAIR.sub(r"\g<key>\g<sep>\g<q>***", text)
    return _IPV6.sub("[addr]", _IPV4.sub("[addr]", text))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, bound ids and the exception, all redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stderr by default) as redacted JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that would drown a district's log at INFO.
    for noisy in ("zeep", "httpx", "botocore", "urllib3", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
