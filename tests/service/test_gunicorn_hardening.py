"""Hardening against a real gunicorn with 4 workers, for the embedded store and for Redis."""

import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from toxiserve.client import ToxiserveClient

from .conftest import REDIS_URL, redis_reachable
from .server import Server

pytestmark = pytest.mark.gunicorn

KEYS = {"tests": "k-tests-0001112222", "limited2": "k-limited2-4445556666"} | {
    f"limited{i}": f"k-limited{i}-{i}2233344455" for i in (3, 4, 5, 6)
}


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server(request):
    env = {
        "TOXISERVE_API_KEYS": ",".join(f"{key_id}:{key}" for key_id, key in KEYS.items()),
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_RATE_LIMITS_PER_KEY": json.dumps({key: "20/minute" for key in KEYS if key.startswith("limited")}),
        "TOXISERVE_MAX_IN_FLIGHT": "1",
        "TOXISERVE_THREADS": "4",
        "TOXISERVE_STORE_NAMESPACE": f"gtest-{uuid.uuid4().hex[:10]}",
    }
    if request.param == "redis":
        if not redis_reachable():
            pytest.skip(f"no Redis reachable at {REDIS_URL} (.ci/run starts redis-server when it is installed)")
        env["TOXISERVE_STORE_URL"] = REDIS_URL
    with Server(env, workers=4) as running:
        yield running


def fresh_post(server, path, body, key="tests", timeout=30, **headers):
    """A new connection per request, so the kernel spreads them over the workers."""
    with requests.Session() as session:
        return session.post(
            f"{server.url}{path}", json=body, headers={"X-API-Key": KEYS[key], **headers}, timeout=timeout
        )


def pids_serving(server, request_ids):
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return {line["pid"] for line in lines if line.get("message") == "request" and line["request_id"] in request_ids}


def test_rate_limit_holds_across_workers(server):
    def send(key, rid):
        # This server admits one request per worker at a time; OVERLOADED is refused before the
        # rate limit counts it, so retry those until the request gets a real answer.
        while (
            response := fresh_post(server, "/v1/predict", {"text": "limit me"}, key=key, **{"X-Request-ID": rid})
        ).status_code == 503:
            time.sleep(0.01)
        return response

    # Which worker accepts a connection is the kernel's choice, and a burst can land on one worker;
    # the exact count must hold every time, and at least one burst must have spread over several.
    spread = []
    for key in ("limited3", "limited4", "limited5", "limited6"):
        ids = [f"rl-{key}-{i}" for i in range(30)]
        with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent, so several workers take some
            statuses = [r.status_code for r in pool.map(lambda rid, key=key: send(key, rid), ids)]
        assert statuses.count(200) == 20 and statuses.count(429) == 10
        time.sleep(0.2)
        spread.append(len(pids_serving(server, set(ids))))
        if spread[-1] > 1:
            break
    assert spread[-1] > 1, f"every burst landed on one worker: {spread}"
    other = [fresh_post(server, "/v1/predict", {"text": "x"}, key="limited2").status_code for _ in range(5)]
    assert other == [200] * 5


def test_replays_match_across_workers_and_worker_death(server):
    body = {"text": "replay across workers", "request_id": f"rp-{uuid.uuid4().hex[:8]}"}
    first = fresh_post(server, "/predict", body)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    replays = [fresh_post(server, "/predict", body) for _ in range(20)]
    assert {r.content for r in replays} == {first.content}
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in replays)
    conflict = fresh_post(server, "/predict", {**body, "text": "something else"})
    assert conflict.status_code == 409 and conflict.json()["error_code"] == "IDEMPOTENCY_CONFLICT"

    victims = server.worker_pids()
    os.kill(victims[0], signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline and (victims[0] in server.worker_pids() or len(server.worker_pids()) < 4):
        time.sleep(0.1)
    assert victims[0] not in server.worker_pids() and len(server.worker_pids()) == 4
    after = [fresh_post(server, "/predict", body) for _ in range(8)]
    assert {r.content for r in after} == {first.content}


def test_burst_over_in_flight_bound_gets_fast_503s(server):
    heavy = {"texts": ["a fairly long sentence that takes the vectoriser some time to chew through " * 6] * 1000}

    def send(_):
        started = time.perf_counter()
        response = fresh_post(server, "/v1/batch_predict", heavy, timeout=60)
        return response, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=48) as pool:
        outcomes = list(pool.map(send, range(96)))
    statuses = [r.status_code for r, _ in outcomes]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 4 and statuses.count(503) >= 10
    refused = [(r, t) for r, t in outcomes if r.status_code == 503]
    assert all(r.json()["error_code"] == "OVERLOADED" and int(r.headers["Retry-After"]) >= 1 for r, _ in refused)
    slowest_refusal = sorted(t for _, t in refused)[len(refused) // 2]
    slowest_success = max(t for r, t in outcomes if r.status_code == 200)
    assert slowest_refusal < slowest_success  # refusals don't wait behind the work they refuse
    assert "Traceback" not in server.output()


def test_client_against_the_real_service(server):
    client = ToxiserveClient(server.url, api_key=KEYS["tests"])
    routed = client.predict("have a nice day", request_id="client-real-1")
    assert routed["request_id"] == "client-real-1" and routed["model_version"] in ("v1", "v2")
    assert client.predict("have a nice day", request_id="client-real-1") == routed
    batch = client.batch_predict(["one", "two"], version="v2")
    assert [r["label"] for r in batch["results"]] and batch["model_version"] == "v2"


def test_requests_that_queued_too_long_get_fast_503s():
    """One thread per worker and no in-flight bound to speak of: requests on kept-alive connections
    queue inside gunicorn, and those that waited past TOXISERVE_MAX_QUEUE_WAIT_MS are refused."""
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEYS['tests']}",
        "TOXISERVE_THREADS": "1",
        "TOXISERVE_MAX_QUEUE_WAIT_MS": "100",
        "TOXISERVE_RATE_LIMIT": "",  # 16 batches of 1,000 texts at once are over the default's texts per second
        "TOXISERVE_STORE_NAMESPACE": f"gtest-{uuid.uuid4().hex[:10]}",
    }
    heavy = {"texts": ["a fairly long sentence that takes the vectoriser some time to chew through " * 6] * 1000}
    clients = 16
    all_connected = threading.Barrier(clients)
    with Server(env, workers=1) as server:

        def send(_):
            with requests.Session() as session:  # like a load balancer's pooled connection
                headers = {"X-API-Key": KEYS["tests"]}
                assert session.post(f"{server.url}/v1/predict", json={"text": "hi"}, headers=headers).ok
                all_connected.wait(30)
                started = time.perf_counter()
                response = session.post(f"{server.url}/v1/batch_predict", json=heavy, headers=headers, timeout=60)
                return response, time.perf_counter() - started

        with ThreadPoolExecutor(max_workers=clients) as pool:
            outcomes = list(pool.map(send, range(clients)))
        statuses = [r.status_code for r, _ in outcomes]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(200) >= 1 and statuses.count(503) >= 4, statuses
        refused = [(r, t) for r, t in outcomes if r.status_code == 503]
        assert all(r.json()["error_code"] == "OVERLOADED" and int(r.headers["Retry-After"]) >= 1 for r, _ in refused)
        assert all("queued" in r.json()["message"] for r, _ in refused)
        slowest_success = max(t for r, t in outcomes if r.status_code == 200)
        assert min(t for _, t in refused) < slowest_success
        # served alone afterwards, nothing has queued: no refusal
        assert fresh_post(server, "/v1/predict", {"text": "after the burst"}).status_code == 200
        assert "Traceback" not in server.output()


def test_a_busy_worker_leaves_new_connections_to_an_idle_one():
    """One thread per worker: while one worker scores a heavy batch, new connections go to the
    other (gunicorn's own gthread worker would take about half and queue them behind the batch)."""
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEYS['tests']}",
        "TOXISERVE_THREADS": "1",
        "TOXISERVE_STORE_NAMESPACE": f"gtest-{uuid.uuid4().hex[:10]}",
    }
    heavy = {"texts": ["a fairly long sentence that takes the vectoriser some time to chew through " * 6] * 1000}
    run = uuid.uuid4().hex[:8]
    with Server(env, workers=2) as server:
        with ThreadPoolExecutor(max_workers=1) as pool:
            busy = pool.submit(fresh_post, server, "/v2/batch_predict", heavy, **{"X-Request-ID": f"heavy-{run}"})
            time.sleep(0.02)  # the batch (char n-grams: slow) is being scored
            quick_ids = []
            while not busy.done() and len(quick_ids) < 20:
                quick_ids.append(f"quick-{run}-{len(quick_ids)}")
                fresh_post(server, "/v1/predict", {"text": "quick"}, **{"X-Request-ID": quick_ids[-1]})
            assert busy.result().status_code == 200
        assert len(quick_ids) >= 5, "under 5 quick answers while the batch ran: one queued behind it?"
        time.sleep(0.2)
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        pid_of = {line["request_id"]: line["pid"] for line in lines if line.get("message") == "request"}
        beside_the_batch = [rid for rid in quick_ids if pid_of[rid] == pid_of[f"heavy-{run}"]]
        assert len(beside_the_batch) <= len(quick_ids) // 5, (beside_the_batch, len(quick_ids))
