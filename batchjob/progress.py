"""Progress: a live line on a terminal, a plain log line every so often under cron or CI; the
stages of long commands (train, evaluate) and the data options they share."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

log = logging.getLogger("batchjob.progress")


def stage(message: str) -> None:
    """A stage of a long command, on stderr (stdout carries only the JSON result)."""
    click.echo(f"batchjob: {message}", err=True)


def data_root_option(command):
    """`--data-root`, for every command that reads a data spec."""
    return click.option(
        "--data-root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="TOXISERVE_DATA_ROOT",
        help="Where a data spec's relative paths point (default: ../shared/data beside the repository).",
    )(command)


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
