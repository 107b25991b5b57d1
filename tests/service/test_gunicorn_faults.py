"""Crashes and store faults on a real gunicorn: kill -9 mid-request, a deleted store file, a hung
Redis, SIGHUP. Bounded counts and waits; no assertion on how fast anything is."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from service.store.base import IDEMPOTENCY_PREFIX
from toxiserve.client import ToxiserveClient

from .conftest import REDIS_URL, redis_reachable
from .server import Server, free_port
from .test_metrics import value

pytestmark = pytest.mark.gunicorn

KEY = "k-faults-0001112222"


def wait_for(condition, timeout: float = 15.0, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s")


def scrape(server) -> str:
    return requests.get(f"{server.url}/metrics", timeout=5).text


# --- kill -9 of the worker that is scoring a request ---------------------------------------------


def pending_owner_sqlite(path: Path, key: str):
    def find():
        try:
            with sqlite3.connect(path, timeout=1) as conn:
                row = conn.execute(
                    "SELECT owner FROM idempotency WHERE key LIKE ? AND response IS NULL",
                    (f"%:{IDEMPOTENCY_PREFIX}:{key}",),
                ).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    return find


def pending_owner_redis(namespace: str, key: str):
    client = redis.Redis.from_url(REDIS_URL)

    def find():
        raw = client.get(f"{namespace}:{IDEMPOTENCY_PREFIX}:{key}")
        record = json.loads(raw) if raw else {}
        return record.get("owner") if "response" not in record else None

    return find


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_worker_killed_mid_batch_loses_no_request(backend, shipped_registry, reference_proba):
    """20 times: SIGKILL the worker that holds a large batch's claim while it scores. The client's
    retries must get every answer, and the answer is stored once (a later call replays it)."""
    namespace = f"kill-{uuid.uuid4().hex[:8]}"
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_STORE_NAMESPACE": namespace,
        "TOXISERVE_REQUEST_DEADLINE": "60",
    }
    if backend == "sqlite":
        store = Path(tempfile.mkdtemp(prefix="toxiserve-kill-")) / "store.sqlite3"
        env["TOXISERVE_STORE_URL"] = f"sqlite:///{store}"
    elif not redis_reachable():
        pytest.skip(f"no Redis reachable at {REDIS_URL} (.ci/run starts redis-server when it is installed)")
    else:
        env["TOXISERVE_STORE_URL"] = REDIS_URL
    texts = [f"batch text {i}: you are all such idiots, honestly, every one of you " * 4 for i in range(200)]
    expected = reference_proba("v2", texts)
    with Server(env, workers=2) as server:
        client = ToxiserveClient(server.url, api_key=KEY)
        killed = []
        for attempt in range(20):
            request_id = f"kill-{attempt}"
            answer = {}
            call = threading.Thread(
                target=lambda rid=request_id, answer=answer: answer.update(
                    client.batch_predict(texts, "v2", request_id=rid)
                )
            )
            call.start()
            find = (
                pending_owner_sqlite(store, f"tests:{request_id}")
                if backend == "sqlite"
                else pending_owner_redis(namespace, f"tests:{request_id}")
            )
            victim = int(wait_for(find).rsplit(":", 1)[1])
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            call.join(90)
            assert not call.is_alive()
            assert answer["request_id"] == request_id and answer["model_version"] == "v2"
            scores = [r["score"] for r in answer["results"]]
            assert max(abs(a - b) for a, b in zip(scores, expected, strict=True)) <= 1e-12
            replay = requests.post(  # the client's route: a request id is kept per route
                f"{server.url}/v1/models/v2/batch_predict",
                json={"texts": texts, "request_id": request_id},
                headers={"X-API-Key": KEY},
                timeout=30,
            )
            assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == answer
        released = [
            json.loads(line) for line in server.output().splitlines() if "pending request claims of dead worker" in line
        ]
        assert len(killed) == 20 and len(released) == 20


# --- the embedded store's file deleted while serving ----------------------------------------------


def test_a_deleted_store_file_does_not_split_the_workers():
    store = Path(tempfile.mkdtemp(prefix="toxiserve-deleted-")) / "store.sqlite3"
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_STORE_URL": f"sqlite:///{store}",
    }
    with Server(env, workers=2) as server:

        def fresh(body):
            with requests.Session() as session:  # a new connection: either worker may take it
                return session.post(f"{server.url}/v1/predict", json=body, headers={"X-API-Key": KEY}, timeout=10)

        assert fresh({"text": "before", "request_id": "reused"}).status_code == 200
        for i in range(16):  # every thread of both workers opens the file, so some reuse it after
            assert fresh({"text": "warm", "request_id": f"warm-{i}"}).status_code == 200
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        time.sleep(1.2)  # each connection checks its file once a second
        answers = [fresh({"text": "after", "request_id": "reused"}) for _ in range(12)]
        # One store again: the first computes, the rest replay it. (Split, a worker still on the
        # deleted file would say 409: "reused" holds "before" there.)
        assert {r.status_code for r in answers} == {200} and len({r.content for r in answers}) == 1
        assert "deleted or replaced" in server.output() and store.exists()


# --- Redis hung (SIGSTOP) under load, failing closed --------------------------------------------


@pytest.fixture
def private_redis():
    """A Redis of our own: stopping the machine's shared one would disturb everything else."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it where it can)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _pings(url))
    yield process, url
    process.send_signal(signal.SIGCONT)
    process.terminate()
    process.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def test_a_hung_redis_lets_nothing_through_when_failing_closed_and_recovers(private_redis):
    process, url = private_redis
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEY}",
        "TOXISERVE_STORE_URL": url,
        "TOXISERVE_STORE_FAILURE_MODE": "closed",
        "TOXISERVE_RATE_LIMIT": "1000/second",  # under 2,000: every request counts in the store, no lease
    }
    with Server(env, workers=2) as server:
        log, stop = [], threading.Event()

        def load():
            with requests.Session() as session:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        response = session.post(
                            f"{server.url}/v1/predict", json={"text": "hi"}, headers={"X-API-Key": KEY}, timeout=10
                        )
                        outcome = (response.status_code, response.json().get("error_code"))
                    except requests.RequestException as exc:
                        outcome = (0, type(exc).__name__)
                    log.append((sent, time.monotonic(), *outcome))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: sum(1 for entry in log if entry[2] == 200) >= 20)
            process.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            time.sleep(1.0)
            ready_while_hung = requests.get(f"{server.url}/readyz", timeout=10)
            time.sleep(1.0)
            continued_at = time.monotonic()
            process.send_signal(signal.SIGCONT)
            recovered = wait_for(
                lambda: next((e for e in log if e[0] > continued_at and e[2] == 200), None), timeout=15
            )
            # Each worker closes its breaker on its own next store call: wait for both, under load.
            closed = wait_for(lambda: value(scrape(server), "store_circuit_open") == 0, timeout=15)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        during = [entry for entry in log if entry[0] > stopped_at and entry[1] < continued_at]
        assert during, "no request completed while Redis was stopped"
        assert {(status, code) for _, _, status, code in during} == {(503, "STORE_UNAVAILABLE")}
        assert ready_while_hung.status_code == 503 and ready_while_hung.json()["status"] == "store_unavailable"
        assert recovered[2] == 200
        assert closed  # closed again on every worker


# --- SIGHUP ---------------------------------------------------------------------------------------


def multiprocess_dir(server) -> str:
    """Where the workers' metric files are: they are memory-mapped, so a worker's maps name them."""
    for pid in server.worker_pids():
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            if "toxiserve-metrics-" in line and line.endswith(".db"):
                return os.path.dirname(line.split()[-1])
    raise AssertionError("no worker has a metrics file mapped")


def test_counters_survive_sighup_and_the_metrics_directory_goes_with_the_master():
    env = {"TOXISERVE_API_KEYS": f"tests:{KEY}", "TOXISERVE_RATE_LIMIT": ""}
    server = Server(env, workers=2).start()
    try:
        for _ in range(30):
            assert requests.post(f"{server.url}/v1/predict", json={"text": "x"}, headers={"X-API-Key": KEY}).ok
        before = value(scrape(server), "http_requests_total", route="/v1/predict", method="POST", status="200")
        assert before == 30
        directory = multiprocess_dir(server)
        old_workers = set(server.worker_pids())
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(set(server.worker_pids()) - old_workers) == 2 and len(server.worker_pids()) == 2)
        after_reload = value(scrape(server), "http_requests_total", route="/v1/predict", method="POST", status="200")
        for _ in range(10):
            assert requests.post(f"{server.url}/v1/predict", json={"text": "x"}, headers={"X-API-Key": KEY}).ok
        final = value(scrape(server), "http_requests_total", route="/v1/predict", method="POST", status="200")
        assert multiprocess_dir(server) == directory
        assert after_reload == 30 and final == 40
        # the app's log lines go on after the reload: one request line each, all 40
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith('{"ts"')]
        logged = [line for line in lines if line.get("message") == "request" and line.get("route") == "/v1/predict"]
        assert len(logged) == 40, len(logged)
    finally:
        server.stop()
    assert not os.path.exists(directory)
