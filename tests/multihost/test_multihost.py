"""Three hosts behind HAProxy with one Redis (tests/multihost/hosts.py): the claims docs/operations.md makes
for many hosts, proven through the load balancer. Needs root, iproute2, haproxy and redis-server."""

import json
import math
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service.rollout.state import bucket
from service.store.factory import open_store
from toxiserve.client import ToxiserveClient

from .hosts import Cluster, missing_requirements

pytestmark = [
    pytest.mark.multihost,
    pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements())),
]

KEY, LIMITED = "k-multi-0001112222", "k-multi-limited-222"
NAMESPACE = f"multihost-{os.getpid()}"


@pytest.fixture(scope="module")
def cluster():
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEY},limited:{LIMITED}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_RATE_LIMITS_PER_KEY": json.dumps({"limited": "20/minute"}),
        "TOXISERVE_STORE_NAMESPACE": NAMESPACE,
        # A whole host that dies leaves its claims until they expire (its master cannot free them).
        "TOXISERVE_IDEMPOTENCY_PENDING_TTL": "3",
        "TOXISERVE_GRACEFUL_TIMEOUT": "10",
    }
    with Cluster(env) as running:
        yield running


def test_a_rate_limit_holds_across_hosts(cluster):
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda i: cluster.post("/v1/predict", {"text": f"limited {i}"}, LIMITED), range(30)))
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 20, 429: 10}
    assert len({a.headers["X-Served-By"] for a in answers}) == 3  # spread over every host


def test_a_request_id_replays_identically_whichever_host_answers(cluster):
    body = {"text": "replay me anywhere", "request_id": "multi-replay-1"}
    answers = [cluster.post("/predict", body, KEY) for _ in range(9)]
    assert {a.status_code for a in answers} == {200} and len({a.content for a in answers}) == 1
    assert len({a.headers["X-Served-By"] for a in answers}) == 3
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 8


def test_the_canary_split_holds_across_hosts(cluster):
    ids = [f"split-{i}" for i in range(300)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda rid: cluster.post("/predict", {"text": "split", "request_id": rid}, KEY), ids))
    versions = [a.json()["model_version"] for a in answers]
    # Every host routes an id as the keyed hash says (10 % canary), with the one routing key the
    # shared store holds, so the split is the same wherever it lands.
    stored = open_store(f"redis://{cluster.net}.1:{cluster.redis_port}/0", NAMESPACE).rollout.read()
    expected = ["v2" if bucket(rid, stored["routing_key"]) < 1000 else "v1" for rid in ids]
    assert versions == expected
    share, bound = versions.count("v2") / len(ids), 3.29 * math.sqrt(0.1 * 0.9 / len(ids))
    assert abs(share - 0.1) <= bound
    assert len({a.headers["X-Served-By"] for a in answers}) == 3


def load(cluster, stop: threading.Event, outcomes: list, prefix: str):
    i = 0
    while not stop.is_set():
        i += 1
        try:
            answer = cluster.post("/v1/predict", {"text": "under load", "request_id": f"{prefix}-{i}"}, KEY)
            outcomes.append((answer.status_code, answer.headers.get("X-Served-By")))
        except requests.RequestException as exc:
            outcomes.append((0, type(exc).__name__))


def test_a_sigterm_drains_a_host_with_no_failed_request(cluster):
    outcomes, stop = [], threading.Event()
    threads = [threading.Thread(target=load, args=(cluster, stop, outcomes, f"drain{t}")) for t in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    host = cluster.hosts[0]
    signalled = time.monotonic()
    host.send_signal(signal.SIGTERM)
    host.wait(30)
    drained = time.monotonic() - signalled
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(30)
    statuses = Counter(status for status, _ in outcomes)
    print(f"drain: {len(outcomes)} requests, {dict(statuses)}, host drained in {drained:.2f} s")
    assert statuses == {200: len(outcomes)} and len(outcomes) > 50
    cluster.start_host(0)  # back for the next test
    deadline = time.monotonic() + 60
    while not cluster.host_ready(0) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_sigkilled_host_loses_no_request_with_the_client(cluster):
    sends = Counter()
    session = requests.Session()
    real_request = session.request

    def counted(method, url, **kwargs):
        sends[kwargs["json"]["request_id"]] += 1
        return real_request(method, url, **kwargs)

    session.request = counted
    client = ToxiserveClient(cluster.url, api_key=KEY, session=session)
    texts = [f"a batch for the crash test, text {i}, which takes a moment to score " * 3 for i in range(300)]
    ids = [f"crash-{i}" for i in range(24)]
    answers, errors = {}, []

    def call(rid):
        try:
            answers[rid] = client.batch_predict(texts, "v2", request_id=rid)
        except Exception as exc:  # counted, then asserted empty
            errors.append(f"{rid}: {exc}")

    def scoring_on_host_1() -> bool:
        scrape = requests.get(f"http://{cluster.addresses[1]}:8000/metrics", timeout=5).text
        return any(
            line.startswith("in_flight_requests ") and float(line.split()[1]) > 0 for line in scrape.splitlines()
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(call, rid) for rid in ids]
        deadline = time.monotonic() + 60
        while not scoring_on_host_1():  # kill it mid-batch, however fast this machine scores
            assert time.monotonic() < deadline, "host 1 never had a request in flight"
            time.sleep(0.01)
        os.killpg(cluster.hosts[1].pid, signal.SIGKILL)  # the whole host: master and workers
        for future in futures:
            future.result(120)
    retried = sum(1 for rid in ids if sends[rid] > 1)
    replays = [cluster.post("/v1/models/v2/batch_predict", {"texts": texts, "request_id": rid}, KEY) for rid in ids]
    print(f"crash: {len(ids)} sent, {len(answers)} answered, {retried} retried, {len(replays)} replayed")
    assert errors == [] and set(answers) == set(ids)
    assert all(
        r.headers.get("Idempotent-Replayed") == "true" and r.json() == answers[r.json()["request_id"]] for r in replays
    )
    assert retried >= 1  # the crash cost some requests a retry, and none more than its answer
