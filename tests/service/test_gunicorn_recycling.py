"""Worker recycling (#25 point 7): a worker that reaches max_requests stops accepting and exits. A
readiness event still queued for the listening socket it had just closed once made it call accept
on nothing (`'NoneType' object has no attribute 'accept'`), exit 255, and print a non-JSON line.
Here workers are recycled over a hundred times under sequential and then concurrent clients.

Kept-alive clients (#29 point 4): a load generator sends its next request the moment an answer
arrives, so a retiring worker always has requests in flight on its kept-alive connections. It must
answer them (with "Connection: close", RFC 9112 section 9.6), never close a connection under a
request: wrk counts that as a read error, and a client that does not retry POSTs loses the request."""

from __future__ import annotations

import http.client
import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import API_KEY, AUTH, isolated_store
from .server import Server

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]


def one_request(url: str, n: int) -> int:
    # A new connection each time: a kept-alive one may be closed by a worker as it retires.
    answer = requests.post(f"{url}/v1/predict", json={"text": f"recycle {n}"}, headers=AUTH, timeout=30)
    return answer.status_code


def test_a_hundred_recycles_under_sequential_and_concurrent_clients():
    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_STORE_URL": isolated_store(),
        "TOXISERVE_MAX_REQUESTS": "20",  # jittered by 2: a recycle every ~20 requests per worker
        "TOXISERVE_LOG_LEVEL": "INFO",  # the master's "Booting worker" lines count the recycles
    }
    with Server(env) as server:
        statuses = Counter(one_request(server.url, n) for n in range(1100))
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses.update(pool.map(lambda n: one_request(server.url, n), range(1100, 2200)))
        output = server.output()
    booted = len(re.findall(r"Booting worker with pid", output))
    assert booted - 2 >= 100, f"only {booted - 2} recycles"
    assert statuses == {200: 2200}
    assert re.findall(r"Worker \(pid:\d+\) (?:exited with code|was sent)[^\n]*", output) == []
    assert "Traceback" not in output and "NoneType" not in output


class CountingConnection(http.client.HTTPConnection):
    """http.client reopens a connection the server closed with "Connection: close"; count the opens."""

    opened = 0

    def connect(self) -> None:
        CountingConnection.opened += 1
        super().connect()


def back_to_back(port: int, requests_per_client: int) -> Counter:
    """As wrk does: one kept-alive connection, the next request as soon as an answer arrives."""
    outcomes: Counter = Counter()
    connection = CountingConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"text": "kept alive"})
    for _ in range(requests_per_client):
        try:
            connection.request("POST", "/v1/predict", body, {**AUTH, "Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            outcomes[answer.status] += 1
        except (http.client.HTTPException, OSError) as exc:  # the server closed under the request
            outcomes[type(exc).__name__] += 1
            connection.close()
    connection.close()
    return outcomes


def test_recycling_workers_answer_every_request_on_kept_alive_connections():
    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_STORE_URL": isolated_store(),
        "TOXISERVE_MAX_REQUESTS": "50",
        "TOXISERVE_LOG_LEVEL": "INFO",
    }
    clients, per_client = 8, 250
    CountingConnection.opened = 0
    with Server(env) as server:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            outcomes = sum(pool.map(lambda _: back_to_back(server.port, per_client), range(clients)), Counter())
        output = server.output()
    recycles = len(re.findall(r"Booting worker with pid", output)) - 2
    assert recycles >= 20, f"only {recycles} recycles"
    assert outcomes == {200: clients * per_client}
    # connections were kept alive between recycles (a new one per request would test nothing here)
    assert CountingConnection.opened < clients * per_client / 5
