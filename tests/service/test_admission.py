"""Cost-based admission, compute deadlines, the store's circuit breaker and store faults (test client)."""

import logging
import os
import time
from pathlib import Path

import pytest

from service.admission.ratelimit import StoreFailurePolicy
from service.store import StoreUnavailableError
from service.store.breaker import CLOSED, OPEN, CircuitBreaker

from .conftest import make_app, post
from .test_metrics import scrape, value

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def guarded_app(store_url, namespace, **overrides):
    return make_app(STORE_URL=store_url, STORE_NAMESPACE=namespace, **overrides)


def test_a_batch_costs_one_unit_per_text(store_url, namespace):
    client = guarded_app(store_url, namespace, RATE_LIMIT="20/minute").test_client()
    too_big = post(client, "/v1/batch_predict", {"texts": ["hello"] * 21})
    assert too_big.status_code == 429 and too_big.json["error_code"] == "RATE_LIMITED"
    assert "whole limit" in too_big.json["message"] and 1 <= int(too_big.headers["Retry-After"]) <= 60
    # The refused 21 were given back: a batch of 20 still fits the window, then nothing does.
    fits = post(client, "/v1/batch_predict", {"texts": ["hello"] * 20})
    assert fits.status_code == 200 and fits.headers["X-RateLimit-Remaining"] == "0"
    assert post(client, "/v1/predict", {"text": "one more"}).status_code == 429


def test_oip_infer_is_charged_per_text_too(store_url, namespace):
    client = guarded_app(store_url, namespace, RATE_LIMIT="5/minute").test_client()
    tensor = {"name": "text", "shape": [6], "datatype": "BYTES", "data": ["a b"] * 6}
    response = post(client, "/v2/models/toxicity/infer", {"inputs": [tensor]})
    assert response.status_code == 429 and response.json["error_code"] == "RATE_LIMITED"
    tensor = {**tensor, "shape": [5], "data": ["a b"] * 5}
    assert post(client, "/v2/models/toxicity/infer", {"inputs": [tensor]}).status_code == 200


def test_leased_limits_count_batches_exactly(store_url, namespace):
    """2,500 texts/hour in batches of 7 over two workers (apps) on one store: exactly 357 batches fit."""
    clients = [guarded_app(store_url, namespace, RATE_LIMIT="2500/hour").test_client() for _ in range(2)]
    statuses = [post(clients[i % 2], "/v1/batch_predict", {"texts": ["x y"] * 7}).status_code for i in range(370)]
    assert statuses.count(200) == 2500 // 7 and set(statuses[statuses.index(429) :]) == {429}


def test_scoring_past_its_deadline_stops_between_chunks_and_is_counted():
    app = make_app(REQUEST_DEADLINE=0.01)
    client = app.test_client()
    before = value(scrape(client), "abandoned_work_total", reason="deadline")
    texts = [f"a text about nothing in particular, number {i}, " * 40 for i in range(1000)]  # many chunks
    response = post(client, "/v2/batch_predict", {"texts": texts})
    assert response.status_code == 503 and response.json["error_code"] == "DEADLINE_EXCEEDED"
    assert response.headers["Retry-After"] == "1"
    assert value(scrape(client), "abandoned_work_total", reason="deadline") == before + 1
    # Small work within the deadline is unaffected.
    assert post(client, "/v2/batch_predict", {"texts": ["hello there"] * 3}).status_code == 200


def test_chunked_scoring_equals_one_call(shipped_registry, reference_proba):
    """Scores from the deadline's chunks equal the whole batch's predict_proba."""
    app = make_app(REQUEST_DEADLINE=600)
    texts = [f"text {i} " * (i % 50 + 1) for i in range(700)]  # > CHUNK_TEXTS and > CHUNK_CHARS
    scores = [r["score"] for r in post(app.test_client(), "/v2/batch_predict", {"texts": texts}).json["results"]]
    expected = reference_proba("v2", texts)
    assert max(abs(a - b) for a, b in zip(scores, expected, strict=True)) <= 1e-12


# --- the circuit breaker, through the policy every store call goes through ------------------------


class Down(Exception):
    pass


def failing_store(calls: list):
    def call():
        calls.append(1)
        raise Down()

    return call


def test_breaker_stops_calling_a_failing_store_then_probes_it():
    calls = []
    policy = StoreFailurePolicy("open", (Down,), lambda op: None, CircuitBreaker(failures=3, cooldown=0.05))
    for _ in range(10):
        assert policy.call("rate_limit", failing_store(calls)) is None  # failing open: served unchecked
    assert len(calls) == 3 and policy.breaker.state == OPEN
    time.sleep(0.06)
    assert policy.call("rate_limit", failing_store(calls)) is None and len(calls) == 4  # one probe
    time.sleep(0.06)
    assert policy.call("rate_limit", lambda: "answer") == "answer" and policy.breaker.state == CLOSED


def test_failing_closed_refuses_every_request_while_the_breaker_is_open():
    calls, errors = [], []
    policy = StoreFailurePolicy("closed", (Down,), errors.append, CircuitBreaker(failures=2, cooldown=60))
    for _ in range(5):
        with pytest.raises(StoreUnavailableError):
            policy.call("idempotency", failing_store(calls))
    assert len(calls) == 2 and len(errors) == 5  # counted every time, the store called twice


def test_readyz_fails_closed_when_the_store_is_dead(namespace):
    closed = guarded_app(CLOSED_PORT_REDIS, namespace, STORE_FAILURE_MODE="closed").test_client()
    response = closed.get("/readyz")
    assert response.status_code == 503 and response.json["status"] == "store_unavailable"
    store = {"backend": "redis", "healthy": False, "failure_mode": "closed", "cause": "unreachable"}
    assert response.json["store"] == store
    opened = guarded_app(CLOSED_PORT_REDIS, namespace, STORE_FAILURE_MODE="open").test_client()
    response = opened.get("/readyz")
    assert response.status_code == 200 and response.json["store"]["healthy"] is False


# --- the embedded store's file ------------------------------------------------------------------


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def test_a_deleted_store_file_is_noticed_and_reopened(namespace, caplog):
    from .conftest import isolated_store

    url = isolated_store()
    app = guarded_app(url, namespace, RATE_LIMIT="")
    client = app.test_client()
    body = {"text": "first", "request_id": "reused-1"}
    assert post(client, "/v1/predict", body).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sqlite_path(url)}{suffix}").unlink(missing_ok=True)
    time.sleep(1.1)  # the file is checked once a second
    with caplog.at_level(logging.ERROR):
        assert post(client, "/v1/predict", {"text": "second", "request_id": "fresh-2"}).status_code == 200
    assert "deleted or replaced" in caplog.text and sqlite_path(url).exists()
    assert value(scrape(client), "store_errors_total", operation="file_replaced") >= 1
    # The new file is used: what is stored now is found again.
    assert post(client, "/v1/predict", {"text": "other", "request_id": "fresh-2"}).status_code == 409


def test_a_corrupt_store_file_is_an_error_every_time(namespace, caplog):
    from .conftest import isolated_store

    url = isolated_store()
    app = guarded_app(url, namespace, RATE_LIMIT="10/minute")
    client = app.test_client()
    before = value(scrape(client), "store_errors_total", operation="rate_limit")
    path = sqlite_path(url)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(os.urandom(8192))  # a new inode of garbage
    time.sleep(1.1)
    with caplog.at_level(logging.ERROR):
        statuses = [post(client, "/v1/predict", {"text": "x"}).status_code for _ in range(5)]
    assert statuses == [200] * 5  # failing open, as configured
    assert caplog.text.count("store is corrupt") >= 1
    assert value(scrape(client), "store_errors_total", operation="rate_limit") == before + 5
