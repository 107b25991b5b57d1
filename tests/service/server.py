"""Run the real service: gunicorn from the Procfile's `web` command on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_command(process: str = "web") -> list[str]:
    for line in (REPO_ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            argv = shlex.split(command)
            argv[0] = str(BIN / argv[0])  # the venv's gunicorn, as the Procfile's PATH would find it
            return argv
    raise LookupError(f"no {process!r} process in the Procfile")


def wait_ready(url: str, check_alive, attempts: int = 600) -> dict:
    """Poll `url`/readyz until it answers 200 (its body); `check_alive()` raises when the process
    behind it has died, with its output, so a failed start never waits out every attempt."""
    for _ in range(attempts):
        try:
            ready = requests.get(f"{url}/readyz", timeout=2)
            if ready.status_code == 200:
                return ready.json()
        except requests.ConnectionError:
            pass
        check_alive()
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready after {attempts} attempts")


class Server:
    """A gunicorn process; output goes to a file so a chatty server never blocks on a full pipe."""

    def __init__(
        self, env: dict[str, str], workers: int = 2, ready_timeout: float = 20.0, argv_prefix: tuple[str, ...] = ()
    ) -> None:
        self.argv_prefix = list(argv_prefix)  # e.g. setpriv, to run as another user
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "TOXISERVE_BIND_HOST": "127.0.0.1",
            "WEB_CONCURRENCY": str(workers),
            # The same split of the same ids on every run (tests/service/conftest.py).
            "TOXISERVE_ROUTING_KEY": "tests-routing-key-0123456789abcdef",
            **env,
        }
        self.ready_timeout = ready_timeout
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None
        self.cold_start_seconds: float | None = None
        self.readyz_statuses: list[int] = []

    def start(self) -> Server:
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [*self.argv_prefix, *procfile_command()],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = started + self.ready_timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status = requests.get(f"{self.url}/readyz", timeout=1).status_code
                self.readyz_statuses.append(status)
                if status == 200:
                    self.cold_start_seconds = time.perf_counter() - started
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.005)
        self.stop()
        raise TimeoutError(f"not ready in {self.ready_timeout}s:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        Path(self.log.name).unlink(missing_ok=True)
