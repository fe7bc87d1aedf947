"""Progress of long work: a bar on a terminal, a structured log line every few percent elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger(__name__)


class ProgressReporter:
    """Call with (done, total); draws `label [#####.....] 1350/2700 50%` on a tty, logs otherwise."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        log_every_pct: int = 10,
        emit: Callable[[int, int], None] | None = None,
    ) -> None:
        """`emit(done, total)` replaces the log line off a terminal (e.g. a JSON event for scripts)."""
        self.label = label
        self.emit = emit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.log_every_pct = log_every_pct
        self._last_pct = -1
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        pct = 100 if total == 0 else done * 100 // total
        if self.tty:
            width = 30
            filled = width * pct // 100
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {pct}%{end}")
            self.stream.flush()
        elif pct // self.log_every_pct != self._last_pct // self.log_every_pct or done >= total:
            if self.emit is not None:
                self.emit(done, total)
            else:
                elapsed = round(time.monotonic() - self._started, 2)
                log.info(
                    "%s progress", self.label, extra={"done": done, "total": total, "elapsed_s": elapsed}
                )
        self._last_pct = pct
