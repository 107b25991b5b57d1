"""Expensive requests on a real gunicorn: work that cannot start soon is refused at once, and work
whose client has gone stops."""

import json
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .server import Server
from .test_gunicorn_faults import pending_owner_sqlite, scrape, wait_for
from .test_metrics import value

pytestmark = pytest.mark.gunicorn

KEY = "k-expensive-0001112222"
# 1,000 texts of 2,000 characters: seconds of work for the char n-gram model (v2).
HEAVY = [
    (f"text {i}: a long and winding sentence that the character n-grams chew slowly " * 30)[:2000] for i in range(1000)
]


def test_work_that_cannot_start_soon_is_refused_at_once():
    store = Path(tempfile.mkdtemp(prefix="toxiserve-expensive-")) / "store.sqlite3"
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_THREADS": "1",
        "TOXISERVE_MAX_QUEUE_WAIT_MS": "200",
        "TOXISERVE_REQUEST_DEADLINE": "60",
        "TOXISERVE_STORE_URL": f"sqlite:///{store}",
    }
    with Server(env, workers=1) as server, ThreadPoolExecutor(max_workers=1) as pool:

        def heavy(request_id):
            body = {"texts": HEAVY, "request_id": request_id}
            return requests.post(f"{server.url}/v2/batch_predict", json=body, headers={"X-API-Key": KEY}, timeout=120)

        first = pool.submit(heavy, "first")
        wait_for(pending_owner_sqlite(store, "tests:first"))  # the only thread is scoring it
        second = requests.post(f"{server.url}/v1/predict", json={"text": "hi"}, headers={"X-API-Key": KEY}, timeout=120)
        assert not first.done(), "the refusal must not wait for the work ahead of it"
        assert second.status_code == 503 and second.json()["error_code"] == "OVERLOADED"
        assert int(second.headers["Retry-After"]) >= 1
        ready = requests.get(f"{server.url}/healthz", timeout=120)  # a GET is never refused for load
        assert ready.status_code == 200
        assert first.result().status_code == 200


def test_work_whose_client_has_gone_stops_and_is_counted():
    env = {"TOXISERVE_API_KEYS": f"tests:{KEY}", "TOXISERVE_RATE_LIMIT": "", "TOXISERVE_REQUEST_DEADLINE": "120"}
    with Server(env, workers=1) as server:
        body = json.dumps({"texts": HEAVY, "request_id": "gone-1"}).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST /v2/batch_predict HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            time.sleep(0.3)  # scoring has begun
        # The client has gone: scoring stops at the next chunk, and says why.
        wait_for(lambda: value(scrape(server), "abandoned_work_total", reason="client_gone") == 1, timeout=60)
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        logged = [line for line in lines if line.get("request_id") == "gone-1"]
        assert logged and logged[-1]["status"] == 499 and logged[-1]["error_code"] == "CLIENT_CLOSED_REQUEST"
