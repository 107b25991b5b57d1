"""Store faults stay store faults (#25 point 2), on a real gunicorn: a store directory made
read-only under a non-root user, and a full disk (a small tmpfs). Each costs a clear `/readyz`
state and a log line naming the cause, never a 500, and the master never exits (it once did, at the
next worker exit, when its hook raised PermissionError)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from .conftest import API_KEY, AUTH
from .server import Server
from .test_gunicorn_faults import wait_for

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]
NOBODY = 65534


def needs_root_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root, to run gunicorn as another user and to mount a tmpfs"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    return None


def predictions(url: str, prefix: str, n: int = 20) -> list[int]:
    """Routed and fixed-version requests with ids: each one claims and stores in the store."""
    statuses = []
    for i in range(n):
        path = "/predict" if i % 2 else "/v1/predict"
        body = {"text": f"store fault {i}", "request_id": f"{prefix}-{i}"}
        statuses.append(requests.post(url + path, json=body, headers=AUTH, timeout=30).status_code)
    return statuses


def recycle_workers(server: Server) -> None:
    """SIGHUP: new workers open the store afresh (and the master runs child_exit for the old ones)."""
    old = set(server.worker_pids())
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(set(server.worker_pids()) - old) >= 2, 30, 0.1)
    wait_for(lambda: requests.get(server.url + "/readyz", timeout=5).status_code == 200, 30, 0.1)


def readyz_store(url: str) -> dict:
    return requests.get(url + "/readyz", timeout=5).json()["store"]


def unhealthy_store(url: str) -> dict | None:
    """/readyz's store report once a worker says it is unhealthy (either worker may answer)."""
    store = readyz_store(url)
    return None if store["healthy"] else store


def test_a_read_only_store_directory_as_a_non_root_user():
    reason = needs_root_tools()
    if reason:
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="toxiserve-ro-"))
    os.chmod(directory, 0o755)
    os.chown(directory, NOBODY, NOBODY)
    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_RATE_LIMIT": "100000/minute",  # the limiter writes to the store on every request
        "TOXISERVE_STORE_URL": f"sqlite:///{directory}/store.sqlite3",
        "HOME": str(directory),
    }
    as_nobody = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    try:
        with Server(env, argv_prefix=as_nobody) as server:
            assert predictions(server.url, "before") == [200] * 20
            assert readyz_store(server.url)["healthy"] is True
            for path in directory.iterdir():
                os.chmod(path, 0o444)
            os.chmod(directory, 0o555)
            recycle_workers(server)  # the old workers' open files could still write: new ones cannot
            statuses = predictions(server.url, "after")
            store = wait_for(lambda: unhealthy_store(server.url), 30, 0.2)
            for _ in range(3):  # and the master survives each worker's exit
                recycle_workers(server)
            assert server.proc.poll() is None
            assert predictions(server.url, "later") == [200] * 20
            output = server.output()
        assert statuses == [200] * 20  # failing open (the default): served, never a 500
        assert store == {"backend": "sqlite", "healthy": False, "failure_mode": "open", "cause": "permission denied"}
        assert "(permission denied); failing open" in output and "Traceback" not in output
    finally:
        os.chmod(directory, 0o755)
        shutil.rmtree(directory, ignore_errors=True)


def test_a_full_disk():
    reason = needs_root_tools()
    if reason:
        pytest.skip(reason)
    mount = Path(tempfile.mkdtemp(prefix="toxiserve-full-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_STORE_URL": f"sqlite:///{mount}/store.sqlite3",
    }
    try:
        with Server(env) as server:
            assert predictions(server.url, "before") == [200] * 20
            with open(mount / "filler", "wb") as filler:  # the rest of the disk
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                        filler.flush()
                except OSError:
                    pass
            # Answers big enough to need new pages: batches of long texts, each with an id.
            texts = [f"{i} " + "a long text to fill the store's pages " * 40 for i in range(50)]
            statuses = [
                requests.post(
                    server.url + "/v1/batch_predict",
                    json={"texts": texts, "request_id": f"full-{n}"},
                    headers=AUTH,
                    timeout=60,
                ).status_code
                for n in range(40)
            ]
            store = wait_for(lambda: unhealthy_store(server.url), 30, 0.2)
            recycle_workers(server)
            assert server.proc.poll() is None
            output = server.output()
        assert set(statuses) == {200}
        assert store["healthy"] is False and store["cause"] == "disk full"
        assert "(disk full); failing open" in output and "Traceback" not in output
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)
