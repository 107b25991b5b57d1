"""Helpers shared by the benchmarks: locating the dataset, timing commands under /usr/bin/time -v."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "data" / "toxicity_davidson2017.csv"
OUT = REPO / "bench" / "out"
BIN = Path(sys.executable).parent


@dataclass
class Measured:
    seconds: float
    max_rss_mib: float
    stdout: str


def timed(argv: list[str], env: dict | None = None) -> Measured:
    """Run argv under GNU time; wall seconds and the peak RSS of the largest process it waited for."""
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *argv], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return Measured(hours * 3600 + minutes * 60 + seconds, rss_kib / 1024, proc.stdout)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.machine()}"
    )
