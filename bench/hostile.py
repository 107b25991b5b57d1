"""Hostile and unlucky traffic, measured the same way against any checkout of this project.

    .venv/bin/python -m bench.hostile                                # this checkout
    .venv/bin/python -m bench.hostile --tree before=/tmp/before --tree after=.

Each attack starts the checkout's own Procfile web process (its code, its models) on 127.0.0.1,
attacks it, and prints numbers: slow and silent clients, a worker killed mid-batch, expensive
batches, a deleted SQLite store, a hung Redis, SIGHUP, malformed requests. Traffic goes to
127.0.0.1 only, and every loop is bounded in count and time. A checkout older than the fixes
shows what the fixes changed; the "Hostile traffic" table in docs/api.md comes from this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from .common import BIN, machine

KEY = "bench-key-0001112222"
SLOW_HOLD = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Target:
    """The checkout's web process: `gunicorn -c gunicorn.conf.py "service:create_app()"` in its root."""

    def __init__(self, tree: Path, env: dict[str, str] | None = None, workers: int = 2) -> None:
        self.tree, self.port = tree, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = Path(tempfile.mkdtemp(prefix="hostile-")) / "store.sqlite3"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "PORT": str(self.port),
            "TOXISERVE_BIND_HOST": "127.0.0.1",
            "WEB_CONCURRENCY": str(workers),
            "TOXISERVE_API_KEYS": f"bench:{KEY}",
            "TOXISERVE_RATE_LIMIT": "",
            "TOXISERVE_STORE_URL": f"sqlite:///{self.store}",
            **(env or {}),
        }
        self.log = tempfile.NamedTemporaryFile(prefix="hostile-", suffix=".log", delete=False)

    def __enter__(self) -> Target:
        argv = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "service:create_app()"]
        self.proc = subprocess.Popen(argv, cwd=self.tree, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(Path(self.log.name).read_text()[-2000:])

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        Path(self.log.name).unlink(missing_ok=True)

    def workers(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def post(self, path: str, body, timeout: float = 30, session=None, **headers):
        sender = session or requests
        return sender.post(f"{self.url}{path}", json=body, headers={"X-API-Key": KEY, **headers}, timeout=timeout)

    def scrape(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=10).text


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def legit_load(target: Target, seconds: float, timeout: float = 2.0) -> dict:
    """Sequential legitimate requests for `seconds`: how many succeeded, and their latency."""
    latencies, failed = [], 0
    end = time.monotonic() + seconds
    with requests.Session() as session:
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                ok = target.post("/v1/predict", {"text": "have a lovely day"}, timeout=timeout, session=session).ok
            except requests.RequestException:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failed += 1
            time.sleep(0.05)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else None
    return {
        "ok": len(latencies),
        "failed": failed,
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(p99, 1) if p99 else None,
    }


# --- attacks -------------------------------------------------------------------------------------


def slow_clients(tree: Path) -> dict:
    """16 connections: headers that never end, a body trickled at a byte a second, a short body."""
    with Target(tree, {"TOXISERVE_THREADS": "4"}) as target:
        attackers = []
        for i in range(16):
            sock = socket.create_connection(("127.0.0.1", target.port))
            head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
            sock.sendall(head if i % 3 == 0 else head + b"Content-Length: 100\r\n\r\n{")
            attackers.append(sock)
        stop = threading.Event()

        def trickle():
            while not stop.wait(1):
                for sock in attackers:
                    try:
                        sock.send(b"a")
                    except OSError:
                        pass

        threading.Thread(target=trickle, daemon=True).start()
        try:
            return legit_load(target, SLOW_HOLD)
        finally:
            stop.set()
            for sock in attackers:
                sock.close()


def silent_connections(tree: Path) -> dict:
    with Target(tree) as target:
        silent = [socket.create_connection(("127.0.0.1", target.port)) for _ in range(40)]
        try:
            return legit_load(target, SLOW_HOLD)
        finally:
            for sock in silent:
                sock.close()


def busiest_worker(target: Target) -> int:
    def cpu(pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    pids = target.workers()
    before = {pid: cpu(pid) for pid in pids}
    time.sleep(0.1)
    return max(pids, key=lambda pid: cpu(pid) - before[pid])


def kill_mid_batch(tree: Path, rounds: int = 20) -> dict:
    """SIGKILL the busy worker while it scores a v2 batch; the checkout's own client retries."""
    spec = importlib.util.spec_from_file_location("tree_client", tree / "service" / "client.py")
    client_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client_module)
    texts = [f"batch text {i}: you are all such idiots, honestly, every one of you " * 10 for i in range(600)]
    answered, lost, seconds = 0, [], []
    with Target(tree, {"TOXISERVE_REQUEST_DEADLINE": "60"}) as target:
        client = client_module.ToxiserveClient(target.url, api_key=KEY)
        for attempt in range(rounds):
            outcome = {}

            def call(rid=f"kill-{attempt}", outcome=outcome):
                started = time.perf_counter()
                try:
                    outcome["answer"] = client.batch_predict(texts, "v2", request_id=rid)
                except Exception as exc:  # what the user of that version would see
                    outcome["error"] = f"{type(exc).__name__}: {str(exc)[:60]}"
                outcome["seconds"] = time.perf_counter() - started

            thread = threading.Thread(target=call)
            thread.start()
            time.sleep(0.25)  # the batch is being scored
            os.kill(busiest_worker(target), signal.SIGKILL)
            thread.join(120)
            seconds.append(outcome.get("seconds", 120))
            if "answer" in outcome:
                answered += 1
            else:
                lost.append(outcome.get("error", "no answer"))
    return {
        "sent": rounds,
        "answered": answered,
        "lost": len(lost),
        "slowest_s": round(max(seconds), 1),
        "errors": lost[:2],
    }


def expensive_batches(tree: Path) -> dict:
    """A 20/minute key sends batches; three huge v2 batches at once; a small request meanwhile."""
    huge = [(f"text {i} with some words in it, again and again " * 50)[:2000] for i in range(1000)]
    result = {}
    env = {"TOXISERVE_RATE_LIMITS_PER_KEY": json.dumps({"bench": "20/minute"}), "TOXISERVE_RATE_LIMIT": ""}
    with Target(tree, env) as target:
        result["batch_of_21_under_20_per_min"] = target.post("/v1/batch_predict", {"texts": ["x"] * 21}).status_code
    with Target(tree) as target, ThreadPoolExecutor(max_workers=3) as pool:

        def send(_):
            started = time.perf_counter()
            try:
                status = target.post("/v2/batch_predict", {"texts": huge}, timeout=180).status_code
            except requests.RequestException:
                status = 0
            return status, time.perf_counter() - started

        futures = [pool.submit(send, i) for i in range(3)]
        time.sleep(0.5)
        started = time.perf_counter()
        try:
            small = target.post("/v1/predict", {"text": "hello"}, timeout=180).status_code
        except requests.RequestException:
            small = 0
        result["small_request_meanwhile"] = f"{small} in {time.perf_counter() - started:.1f} s"
        outcomes = [f.result() for f in futures]
        result["three_huge_batches"] = ", ".join(f"{status} in {secs:.1f} s" for status, secs in outcomes)
    return result


def deleted_sqlite(tree: Path) -> dict:
    """Delete the store file while serving; reuse one request id with a new payload 12 times."""
    with Target(tree) as target:
        assert target.post("/v1/predict", {"text": "before", "request_id": "reused"}).ok
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{target.store}{suffix}").unlink(missing_ok=True)
        time.sleep(1.5)
        statuses = []
        for _ in range(12):
            with requests.Session() as session:
                statuses.append(
                    target.post("/v1/predict", {"text": "after", "request_id": "reused"}, session=session).status_code
                )
        log = Path(target.log.name).read_text()
        return {
            "200": statuses.count(200),
            "409": statuses.count(409),
            "logged": "deleted or replaced" in log,
        }


def corrupt_sqlite(tree: Path) -> dict:
    with Target(tree, {"TOXISERVE_RATE_LIMIT": "100/minute"}) as target:
        for suffix in ("-wal", "-shm"):
            Path(f"{target.store}{suffix}").unlink(missing_ok=True)
        target.store.write_bytes(os.urandom(8192))
        time.sleep(1.5)
        statuses = [target.post("/v1/predict", {"text": "x"}).status_code for _ in range(10)]
        log = Path(target.log.name).read_text()
        return {
            "statuses": sorted(set(statuses)),
            "error_lines": sum(1 for line in log.splitlines() if '"ERROR"' in line and "corrupt" in line),
            "warning_lines": sum(1 for line in log.splitlines() if '"WARNING"' in line and "store" in line),
            "store_errors_total": metric(target.scrape(), "store_errors_total"),
        }


def hung_redis(tree: Path, mode: str) -> dict:
    """SIGSTOP a private Redis for 3 s under load from 4 clients; SIGCONT; when do 200s return?"""
    binary = shutil.which("redis-server")
    if binary is None:
        return {"skipped": "redis-server not installed"}
    port = free_port()
    redis_proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    env = {
        "TOXISERVE_STORE_URL": f"redis://127.0.0.1:{port}/0",
        "TOXISERVE_STORE_FAILURE_MODE": mode,
        "TOXISERVE_RATE_LIMIT": "1000/second",
    }
    try:
        with Target(tree, env) as target:
            log, stop = [], threading.Event()

            def load():
                with requests.Session() as session:
                    while not stop.is_set():
                        sent = time.monotonic()
                        try:
                            status = target.post("/v1/predict", {"text": "hi"}, timeout=10, session=session).status_code
                        except requests.RequestException:
                            status = 0
                        log.append((sent, time.monotonic(), status))

            threads = [threading.Thread(target=load) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(2)
            redis_proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            time.sleep(3)
            redis_proc.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            time.sleep(4)
            stop.set()
            for thread in threads:
                thread.join(30)
        before = [e for e in log if e[0] < stopped - 0.2]
        during = [e for e in log if stopped < e[0] and e[1] < resumed]
        recovered = next((e[1] - resumed for e in sorted(log) if e[0] > resumed and e[2] == 200), None)
        first_before = before[0][0] if before else stopped
        return {
            "req_s_before": round(len(before) / max(0.1, stopped - 0.2 - first_before)),
            "req_s_while_hung": round(len(during) / (resumed - stopped)),
            "200_while_hung": sum(1 for e in during if e[2] == 200),
            "first_200_after_SIGCONT_s": round(recovered, 2) if recovered is not None else None,
        }
    finally:
        redis_proc.send_signal(signal.SIGCONT)
        redis_proc.terminate()
        redis_proc.wait(10)


def metrics_dirs(target: Target) -> set[str]:
    """The multiprocess directories the workers write to (their metric files are memory-mapped)."""
    found = set()
    for pid in target.workers():
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            if line.endswith(".db") and "toxiserve-metrics-" in line:
                found.add(os.path.dirname(line.split()[-1]))
    return found


def sighup(tree: Path) -> dict:
    with Target(tree) as target:
        for _ in range(50):
            target.post("/v1/predict", {"text": "x"})
        before = metric(target.scrape(), "http_requests_total", route="/v1/predict")
        dirs = metrics_dirs(target)
        old = set(target.workers())
        target.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (set(target.workers()) & old or len(target.workers()) < 2):
            time.sleep(0.1)
        time.sleep(0.5)
        after = metric(target.scrape(), "http_requests_total", route="/v1/predict")
        dirs |= metrics_dirs(target)
    return {
        "counter_before": before,
        "counter_after": after,
        "metrics_dirs_used": len(dirs),
        "left_after_exit": sum(1 for d in dirs if os.path.exists(d)),
    }


MALFORMED = {
    "deep nesting": lambda t: requests.post(
        f"{t.url}/v1/predict",
        data="[" * 100_000 + "]" * 100_000,
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    ),
    "chunked 5 MiB": lambda t: requests.post(
        f"{t.url}/v1/predict",
        data=iter([b'{"text": "' + b"a" * (1 << 20)] + [b"a" * (1 << 20)] * 4 + [b'"}']),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    ),
    "URL of 5,000 chars": lambda t: requests.get(f"{t.url}/{'a' * 5000}"),
    "200 headers": lambda t: requests.get(f"{t.url}/readyz", headers={f"X-H{i}": "v" for i in range(200)}),
    "zero-width-only text": lambda t: t.post("/v1/predict", {"text": "\u200b\u200b\u200d"}),
}


def malformed(tree: Path) -> dict:
    result = {}
    with Target(tree) as target:
        for name, send in MALFORMED.items():
            try:
                response = send(target)
                kind = response.headers.get("Content-Type", "").split(";")[0]
                result[name] = f"{response.status_code} {kind}"
            except requests.RequestException as exc:
                result[name] = type(exc).__name__
        with socket.create_connection(("127.0.0.1", target.port)) as sock:
            sock.sendall(b"NOT A REQUEST\r\n\r\n")
            head = sock.recv(4096).split(b"\r\n\r\n")[0].decode("latin-1")
            kind = re.search(r"Content-Type: ([^\r;]+)", head)
            result["bad request line"] = f"{head.split()[1]} {kind.group(1) if kind else '?'}"
        v1 = [target.post("/v1/predict", {"text": t}).json()["score"] for t in ("fuck you", "f\u200buck y\u200bou")]
        result["'f\u200buck y\u200bou' vs 'fuck you' (v1)"] = f"{v1[1]:.3f} vs {v1[0]:.3f}"
    return result


ATTACKS = {
    "16 slow clients, 10 s": slow_clients,
    "40 silent connections, 10 s": silent_connections,
    "kill -9 mid-batch x20": kill_mid_batch,
    "expensive batches": expensive_batches,
    "SQLite file deleted": deleted_sqlite,
    "SQLite file corrupted": corrupt_sqlite,
    "Redis SIGSTOP 3 s, closed": lambda tree: hung_redis(tree, "closed"),
    "Redis SIGSTOP 3 s, open": lambda tree: hung_redis(tree, "open"),
    "SIGHUP": sighup,
    "malformed input": malformed,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a checkout (default: this one)")
    parser.add_argument("--only", action="append", default=[], help="run only attacks whose name contains this")
    args = parser.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["this", str(Path(__file__).resolve().parent.parent)]]
    print(f"# {machine()}", flush=True)
    for name, attack in ATTACKS.items():
        if args.only and not any(part in name for part in args.only):
            continue
        for label, path in trees:
            try:
                outcome = attack(Path(path).resolve())
            except Exception as exc:  # one attack's trouble must not hide the others' numbers
                outcome = {"failed": f"{type(exc).__name__}: {exc}"[:200]}
            print(json.dumps({"attack": name, "tree": label, **outcome}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    sys.exit(main())
