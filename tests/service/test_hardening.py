"""Rate limits, idempotency, store failure modes and backpressure, through the Flask test client."""

import threading
import time

import pytest

from .conftest import OTHER_KEY, make_app, post

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def guarded_app(store_url, namespace, **overrides):
    return make_app(STORE_URL=store_url, STORE_NAMESPACE=namespace, **overrides)


def test_rate_limit_per_key_with_headers(store_url, namespace):
    client = guarded_app(store_url, namespace, RATE_LIMIT="5/minute").test_client()
    statuses = [post(client, "/v1/predict", {"text": "hello"}).status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    ok = post(client, "/predict", {"text": "hi"}, {"X-API-Key": OTHER_KEY})
    assert ok.status_code == 200
    assert ok.headers["X-RateLimit-Limit"] == "5" and ok.headers["X-RateLimit-Remaining"] == "4"
    denied = post(client, "/v1/predict", {"text": "hello"})
    body = denied.json
    assert body["error_code"] == "RATE_LIMITED" and "5 per 1 minute" in body["message"]
    assert body["request_id"] == denied.headers["X-Request-ID"]
    assert 1 <= int(denied.headers["Retry-After"]) <= 60
    assert denied.headers["X-RateLimit-Remaining"] == "0"
    assert int(denied.headers["X-RateLimit-Reset"]) >= time.time()


def test_high_limits_are_leased_and_never_exceeded(store_url, namespace):
    """2,500/hour is taken from the store 2 hits at a time (1/1000 of the limit): two workers (apps)
    on one store still admit exactly the limit. Remaining is as of this worker's last store round trip:
    it can overstate what is left by at most what the other worker leased since (one lease)."""
    clients = [guarded_app(store_url, namespace, RATE_LIMIT="2500/hour").test_client() for _ in range(2)]
    statuses, overstated = [], []
    for i in range(2520):
        response = post(clients[i % 2], "/v1/predict", {"text": "lease"})
        statuses.append(response.status_code)
        if int(response.headers["X-RateLimit-Remaining"]) > 2500 - statuses.count(200) + 2:
            overstated.append(i)
    assert statuses == [200] * 2500 + [429] * 20
    assert overstated == []


def test_a_lease_saves_store_round_trips(store_url, namespace):
    app = guarded_app(store_url, namespace, RATE_LIMIT="1000000/hour")
    limiter = app.extensions["toxiserve"].rate_limiter
    storage = limiter.strategy.storage
    calls = []
    real = storage.incr_with_expiry

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    storage.incr_with_expiry = counting
    decisions = [limiter.check("tests") for _ in range(1000)]
    assert len(calls) == 10  # leases of 100
    assert [d.remaining for d in decisions] == sorted((d.remaining for d in decisions), reverse=True)
    assert decisions[-1].remaining == 1_000_000 - 1000


def test_probes_and_docs_are_exempt(store_url, namespace):
    client = guarded_app(store_url, namespace, RATE_LIMIT="1/minute").test_client()
    post(client, "/v1/predict", {"text": "use the only slot"})
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_per_key_override(store_url, namespace):
    client = guarded_app(store_url, namespace, RATE_LIMIT="100/minute", RATE_LIMITS_PER_KEY={"other": "2/minute"})
    client = client.test_client()
    other = [post(client, "/v1/predict", {"text": "x y"}, {"X-API-Key": OTHER_KEY}).status_code for _ in range(3)]
    assert other == [200, 200, 429]
    assert post(client, "/v1/predict", {"text": "x y"}).status_code == 200


def test_replay_returns_the_same_response_even_after_canary_change(store_url, namespace):
    first_app = guarded_app(store_url, namespace, CANARY_PERCENT=0)
    first = post(first_app.test_client(), "/predict", {"text": "replay me", "request_id": "idem-1"})
    assert first.status_code == 200 and first.json["model_version"] == "v1"
    assert "Idempotent-Replayed" not in first.headers
    # Another process sharing the store, after the rollout went to 100 % canary, replays the stored answer.
    second_app = guarded_app(store_url, namespace)
    second_app.extensions["toxiserve"].rollout.update({"canary_percent": 100}, None, "test", "all in")
    again = post(second_app.test_client(), "/predict", {"text": "replay me", "request_id": "idem-1"})
    assert again.status_code == 200 and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    fresh = post(second_app.test_client(), "/predict", {"text": "replay me", "request_id": "idem-2"})
    assert fresh.json["model_version"] == "v2"


def test_services_sharing_a_store_keep_their_ids_apart(store_url, namespace):
    """Two services on one store (one SQLite file, or one Redis) with their own namespaces: the same
    request id is a different request in each, never a conflict or a replay of the other's answer."""
    first = post(guarded_app(store_url, namespace).test_client(), "/v1/predict", {"text": "a", "request_id": "ns-1"})
    other = guarded_app(store_url, f"{namespace}-other").test_client()
    second = post(other, "/v1/predict", {"text": "something else", "request_id": "ns-1"})
    assert first.status_code == second.status_code == 200
    assert "Idempotent-Replayed" not in second.headers


def test_idempotency_key_header_is_deduplicated(store_url, namespace):
    client = guarded_app(store_url, namespace).test_client()
    one = post(client, "/v1/batch_predict", {"texts": ["a b", "c d"]}, {"Idempotency-Key": "hdr-idem"})
    two = post(client, "/v1/batch_predict", {"texts": ["a b", "c d"]}, {"Idempotency-Key": "hdr-idem"})
    assert one.json == two.json and two.headers["Idempotent-Replayed"] == "true"
    other = post(client, "/v1/batch_predict", {"texts": ["e f"]}, {"Idempotency-Key": "hdr-idem"})
    assert other.status_code == 409 and other.json["error_code"] == "IDEMPOTENCY_CONFLICT"


def test_a_reused_correlation_id_is_never_deduplicated(store_url, namespace):
    """A gateway that reuses X-Request-ID across texts gets each answered (it was 200, then 409 for 24 h)."""
    client = guarded_app(store_url, namespace).test_client()
    headers = {"X-Request-ID": "gateway-trace-1"}
    first = post(client, "/v1/predict", {"text": "have a lovely day"}, headers)
    second = post(client, "/v1/predict", {"text": "you stupid idiot"}, headers)
    assert first.status_code == second.status_code == 200
    assert "Idempotent-Replayed" not in second.headers and second.headers["X-Request-ID"] == "gateway-trace-1"
    assert first.json["score"] != second.json["score"]
    # the same for OIP: its `id` is only echoed
    infer = {"id": "oip-1", "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello there"]}]}
    again = {**infer, "inputs": [{**infer["inputs"][0], "data": ["you stupid idiot"]}]}
    answers = [post(client, "/v2/models/toxicity/infer", body) for body in (infer, again)]
    assert [a.status_code for a in answers] == [200, 200] and [a.json["id"] for a in answers] == ["oip-1"] * 2
    assert "Idempotent-Replayed" not in answers[1].headers


def test_the_bodys_request_id_wins_over_idempotency_key(store_url, namespace):
    client = guarded_app(store_url, namespace).test_client()
    first = post(client, "/v1/predict", {"text": "a", "request_id": "one"}, {"Idempotency-Key": "two"})
    assert first.status_code == 200 and first.json["request_id"] == "one"
    replay = post(client, "/v1/predict", {"text": "a", "request_id": "one"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    fresh = post(client, "/v1/predict", {"text": "b"}, {"Idempotency-Key": "two"})  # "two" was never a key
    assert fresh.status_code == 200 and "Idempotent-Replayed" not in fresh.headers
    malformed = post(client, "/v1/predict", {"text": "a"}, {"Idempotency-Key": "bad key!"})
    assert malformed.status_code == 422 and "Idempotency-Key" in malformed.json["message"]


@pytest.mark.parametrize(
    "path, first, second",
    [
        ("/v1/predict", {"text": "one"}, {"text": "two"}),
        ("/v1/batch_predict", {"texts": ["a"]}, {"texts": ["a", "b"]}),
    ],
)
def test_same_id_different_payload_conflicts(store_url, namespace, path, first, second):
    client = guarded_app(store_url, namespace).test_client()
    assert post(client, path, {**first, "request_id": "dup-1"}).status_code == 200
    conflict = post(client, path, {**second, "request_id": "dup-1"})
    assert conflict.status_code == 409
    assert conflict.json["error_code"] == "IDEMPOTENCY_CONFLICT" and conflict.json["request_id"] == "dup-1"


def test_same_id_on_another_route_conflicts(store_url, namespace):
    client = guarded_app(store_url, namespace).test_client()
    assert post(client, "/v1/predict", {"text": "same", "request_id": "route-1"}).status_code == 200
    assert post(client, "/v2/predict", {"text": "same", "request_id": "route-1"}).status_code == 409


def test_ids_are_scoped_per_api_key(store_url, namespace):
    client = guarded_app(store_url, namespace).test_client()
    assert post(client, "/v1/predict", {"text": "mine", "request_id": "shared-id"}).status_code == 200
    theirs = post(client, "/v1/predict", {"text": "theirs", "request_id": "shared-id"}, {"X-API-Key": OTHER_KEY})
    assert theirs.status_code == 200 and "Idempotent-Replayed" not in theirs.headers


def test_errors_are_not_stored(store_url, namespace):
    client = guarded_app(store_url, namespace).test_client()
    assert post(client, "/v1/predict", {"text": "  ", "request_id": "err-1"}).status_code == 422
    assert post(client, "/v1/predict", {"text": "fixed", "request_id": "err-1"}).status_code == 200


def test_concurrent_duplicates_run_inference_once(store_url, namespace, monkeypatch):
    app = guarded_app(store_url, namespace)
    model = app.extensions["toxiserve"].inference.models["v1"]
    calls, real_score = [], model.score_with_oov

    def slow_score(normalised, raw):
        calls.append(1)
        time.sleep(0.3)
        return real_score(normalised, raw)

    monkeypatch.setattr(model, "score_with_oov", slow_score)
    results = []

    def send():
        results.append(post(app.test_client(), "/v1/predict", {"text": "race", "request_id": "race-1"}))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert all(r.status_code == 200 for r in results)
    assert len({r.get_data() for r in results}) == 1
    assert sorted(r.headers.get("Idempotent-Replayed", "false") for r in results) == ["false"] + ["true"] * 3


def test_store_down_fail_open_serves_and_counts(namespace, caplog):
    from .test_metrics import scrape, value

    app = make_app(STORE_URL=CLOSED_PORT_REDIS, STORE_NAMESPACE=namespace, RATE_LIMIT="1/minute")
    client = app.test_client()
    before = scrape(client)
    for index in range(3):
        response = post(client, "/v1/predict", {"text": "still served", "request_id": f"open-{index}"})
        assert response.status_code == 200
    after = scrape(client)
    for operation in ("rate_limit", "idempotency"):
        counted = value(after, "store_errors_total", operation=operation)
        assert counted - value(before, "store_errors_total", operation=operation) == 3
    assert "store unreachable" in caplog.text


def test_store_down_fail_closed_is_503(namespace):
    app = make_app(
        STORE_URL=CLOSED_PORT_REDIS, STORE_NAMESPACE=namespace, RATE_LIMIT="1/minute", STORE_FAILURE_MODE="closed"
    )
    response = post(app.test_client(), "/v1/predict", {"text": "refused"})
    assert response.status_code == 503 and response.json["error_code"] == "STORE_UNAVAILABLE"
    assert app.test_client().get("/healthz").status_code == 200


def test_overloaded_worker_answers_503_at_once(monkeypatch):
    app = make_app(MAX_IN_FLIGHT=1)
    model = app.extensions["toxiserve"].inference.models["v1"]
    entered, release = threading.Event(), threading.Event()
    real_score = model.score_with_oov

    def blocking_score(normalised, raw):
        entered.set()
        release.wait(5)
        return real_score(normalised, raw)

    monkeypatch.setattr(model, "score_with_oov", blocking_score)
    holder = threading.Thread(target=lambda: post(app.test_client(), "/v1/predict", {"text": "hold the slot"}))
    holder.start()
    assert entered.wait(5)
    refused = post(app.test_client(), "/v1/predict", {"text": "no room"})
    assert holder.is_alive()  # answered while the slot was still held: it did not wait for it
    assert refused.status_code == 503 and refused.json["error_code"] == "OVERLOADED"
    assert refused.headers["Retry-After"] == "1"
    assert app.test_client().get("/healthz").status_code == 200  # probes are never refused
    release.set()
    holder.join()
    assert post(app.test_client(), "/v1/predict", {"text": "room again"}).status_code == 200
