"""Worker recycling (#25 point 7): a worker that reaches max_requests stops accepting and exits. A
readiness event still queued for the listening socket it had just closed once made it call accept
on nothing (`'NoneType' object has no attribute 'accept'`), exit 255, and print a non-JSON line.
Here workers are recycled over a hundred times under sequential and then concurrent clients."""

from __future__ import annotations

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
