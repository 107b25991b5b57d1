"""Progress: a live line on a terminal, a plain log line every so often under cron or CI."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("batchjob.progress")


class Progress:
    def __init__(self, total: int | None, interval: float = 10.0, stream=None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.interval = 0.2 if self.interactive else interval
        self.started = self._last = time.perf_counter()
        self.done = 0

    def advance(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._report(now)

    def _report(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        of_total = f"/{self.total:,} ({self.done / self.total:.0%})" if self.total else ""
        line = f"{self.done:,}{of_total} rows, {rate:,.0f} rows/s"
        if self.interactive:
            self.stream.write(f"\r{line}   ")
            self.stream.flush()
        else:
            log.info("progress: %s", line)

    def finish(self) -> None:
        if self.interactive:
            self._report(time.perf_counter())
            self.stream.write("\n")
