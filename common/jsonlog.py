"""JSON-lines logging shared by agent, collector and simulator, with secrets and camera addresses redacted.

Redaction happens in the formatter, so no call site can forget it: credentials in URLs, `password=`-style
pairs and IP addresses (camera addresses must not leave the district, not even through a log shipper).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from contract.errors import ContractError

# User info runs to the last `@` before the path, so a password that contains `@` is removed whole.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s]*@", re.IGNORECASE)
_SECRET_PAIR = re.compile(
    r"(?P<key>password|passwd|secret|token|secret_key|access_key)(?P<kq>['\"]?)(?P<sep>\s*[=:]\s*)"
    r"(?P<q>['\"]?)[^\s'\",}]+",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(r"(?P<h>authorization\s*[:=]\s*['\"]?)(?:basic|digest|bearer)\b[^\r\n'\"]*", re.I)
_XML_PASSWORD = re.compile(r"(?P<open><[^<>]*password[^<>]*>)[^<]*(?P<close></)", re.IGNORECASE)
_SECRET_KEYS = re.compile(r"password|passwd|secret|token|authorization", re.IGNORECASE)
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
    text = _SECRET_PAIR.sub(r"\g<key>\g<kq>\g<sep>\g<q>***", text)
    text = _AUTH_HEADER.sub(r"\g<h>***", text)
    text = _XML_PASSWORD.sub(r"\g<open>***\g<close>", text)
    return _IPV6.sub("[addr]", _IPV4.sub("[addr]", text))


def _redact_value(key: str, value: Any) -> Any:
    """A structured `extra=` value, redacted inside dicts, lists and tuples; secret-named keys whole."""
    if _SECRET_KEYS.search(key):
        return "***"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value("", v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


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
                entry[key] = _redact_value(key, value)
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


class RejectLog:
    """Logs dropped input at most once per reason and interval, with how many were dropped since: a flood of
    malformed messages is counted by the caller's metrics, not written to the log one line (or one traceback)
    per message."""

    def __init__(
        self, logger: logging.Logger, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def note(self, exc: ContractError, topic: str) -> None:
        """A message that broke the contract."""
        self._emit(exc.reason, "dropped message on %s: %s", topic[:200], exc)

    def dropped(self, reason: str, topic: str, detail: str) -> None:
        """A message that followed the contract and failed the consumer's own checks (`reason` a slug)."""
        self._emit(reason, "dropped message on %s: %s: %s", topic[:200], reason, detail)

    def unexpected(self, topic: str) -> None:
        """Called in an `except` block: a message that hit a bug, logged with its traceback."""
        self._emit("internal_error", "could not handle a message on %s", topic[:200], exc_info=True)

    def _emit(self, reason: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval_s:
            self._suppressed[reason] += 1
            return
        self._last[reason] = now
        dropped = self._suppressed.pop(reason, 0)
        self._log.warning(
            msg + " (%s more since last report)", *args, dropped, exc_info=exc_info, extra={"reason": reason}
        )
