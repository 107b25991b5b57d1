"""/metrics through the Flask test client: the counters move with the requests that should move them."""

import re

import pytest

from .conftest import API_KEY, AUTH, make_app, post


def scrape(client, headers=None) -> str:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def value(text: str, metric: str, **labels) -> float:
    """The sample `metric{labels}` (labels in any order), 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(metric):
            continue
        match = re.fullmatch(rf"{re.escape(metric)}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if found == {k: str(v) for k, v in labels.items()}:
            return float(match.group(2))
    return 0.0


@pytest.fixture
def app():
    return make_app(RATE_LIMIT="3/minute")


def test_counters_follow_requests(app):
    client = app.test_client()
    before = scrape(client)
    for _ in range(3):
        post(client, "/v1/predict", {"text": "hello"})
    post(client, "/v1/predict", {"text": "hello"})  # 429: the 4th in the minute
    client.post("/v1/predict", json={"text": "hello"}, headers={"X-API-Key": "wrong"})  # 401
    after = scrape(client)

    def delta(metric, **labels):
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert delta("http_requests_total", route="/v1/predict", method="POST", status="200") == 3
    assert delta("http_requests_total", route="/v1/predict", method="POST", status="429") == 1
    assert delta("http_requests_total", route="/v1/predict", method="POST", status="401") == 1
    assert delta("rate_limited_total", key_id="tests") == 1
    assert delta("auth_failures_total") == 1
    assert delta("inference_duration_seconds_count", model_version="v1") == 3
    assert delta("inference_batch_size_count", model_version="v1") == 3
    assert delta("http_request_duration_seconds_count", route="/v1/predict", method="POST") == 5
    assert (
        value(
            after,
            "model_info",
            name="toxicity",
            version="v1",
            sha256=app.extensions["toxiserve"].inference.models["v1"].sha256,
        )
        == 1
    )
    assert value(after, "service_ready") == 1
    assert 'le="0.001"' in after and 'le="0.0125"' in after  # fine buckets for p50/p95/p99


def test_canary_and_batch_metrics():
    client = make_app(RATE_LIMIT="").test_client()
    before = scrape(client)
    for i in range(50):
        post(client, "/predict", {"text": "route", "request_id": f"m-{i}"})
    post(client, "/v2/batch_predict", {"texts": ["a b"] * 32})
    after = scrape(client)
    stable = value(after, "canary_routed_total", arm="stable") - value(before, "canary_routed_total", arm="stable")
    canary = value(after, "canary_routed_total", arm="canary") - value(before, "canary_routed_total", arm="canary")
    assert stable + canary == 50 and canary > 0
    bucket = value(after, "inference_batch_size_bucket", model_version="v2", le="32.0") - value(
        before, "inference_batch_size_bucket", model_version="v2", le="32.0"
    )
    assert bucket >= 1


def test_overload_and_store_errors_are_counted(monkeypatch):
    app = make_app(STORE_URL="redis://127.0.0.1:1/0", RATE_LIMIT="5/second")
    client = app.test_client()
    before = scrape(client)
    post(client, "/v1/predict", {"text": "store is down", "request_id": "se-1"})
    after = scrape(client)
    assert (
        value(after, "store_errors_total", operation="rate_limit")
        - value(before, "store_errors_total", operation="rate_limit")
        == 1
    )
    service = app.extensions["toxiserve"]
    monkeypatch.setattr(service.in_flight, "try_enter", lambda: False)
    assert post(client, "/v1/predict", {"text": "x"}).status_code == 503
    assert value(scrape(client), "overloaded_total") - value(after, "overloaded_total") == 1


def test_metrics_never_expose_keys_or_text(app):
    client = app.test_client()
    post(client, "/predict", {"text": "zz-SECRET-TEXT-11 hi"})
    text = scrape(client)
    assert "SECRET-TEXT" not in text and API_KEY not in text


def test_metrics_token_when_configured():
    client = make_app(METRICS_TOKEN="scrape-me").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert scrape(client, {"Authorization": "Bearer scrape-me"})
    assert client.get("/metrics", headers=AUTH).status_code == 401  # an API key is not the metrics token
