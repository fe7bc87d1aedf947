"""Whether S3 refuses the agent's uploads for a reason a person must fix (credentials, bucket, policy, clock).

Such a refusal does not cure itself, so it is signalled instead of retried at full speed: the gauge
cctv_agent_clip_uploads_blocked{reason} is 1 (the CctvAgentClipUploadsBlocked alert), one error-level log line
says so when the state changes, and the spool retries at `blocked_retry_s` until an upload succeeds. The
clips stay in the spool meanwhile; none is dropped.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import Gauge

log = logging.getLogger(__name__)


class UploadBlock:
    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()  # uploads end in worker threads
        self.reason: str | None = None

    def refused(self, reason: str, detail: str) -> None:
        """S3 refused an upload for `reason` (a bounded label); `detail` is the error, for people."""
        with self._lock:
            if reason == self.reason:
                return
            self._clear_gauge()
            self.reason = reason
            self._gauge.labels(reason).set(1)
        log.error("S3 refuses clip uploads (%s: %s): a person must act; clips stay spooled", reason, detail)

    def accepted(self) -> None:
        """An upload succeeded: whatever blocked the uploads is fixed."""
        with self._lock:
            if self.reason is None:
                return
            was = self.reason
            self._clear_gauge()
            self.reason = None
        log.warning("S3 accepts clip uploads again (was %s)", was)

    def _clear_gauge(self) -> None:
        if self.reason is not None:
            self._gauge.labels(self.reason).set(0)
