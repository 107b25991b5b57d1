import os
import subprocess
import sys
from pathlib import Path

BATCHJOB = Path(sys.executable).with_name("batchjob")


def run_batchjob(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed console script in a real subprocess, as cron would run it."""
    return subprocess.run(
        [str(BATCHJOB), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
