"""Every error code with its exact body: {"error_code", "message", "request_id"} (+ "details")."""

import threading

import pytest

from shared_features import ModelRegistry

from .conftest import API_KEY, AUTH, OTHER_KEY, make_app, post

RID = "err-test-1"


def assert_error(response, status, code, message=None, details=None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) <= {"error_code", "message", "request_id", "details"}
    assert body["error_code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    if message is not None:
        assert body["message"] == message
    if details is not None:
        assert body["details"] == details
    assert "Traceback" not in response.get_data(as_text=True) and "<html" not in response.get_data(as_text=True)
    return body


def test_invalid_json(client):
    response = client.post("/v1/predict", data=b'{"text": ', content_type="application/json", headers=AUTH)
    assert_error(response, 400, "INVALID_JSON", "request body is not valid JSON: Expecting value at line 1 column 10")


def test_deeply_nested_json_is_invalid_json(client):
    response = client.post(
        "/v1/predict", data="[" * 50_000 + "]" * 50_000, content_type="application/json", headers=AUTH
    )
    assert_error(response, 400, "INVALID_JSON", "request body nests too deeply")


def test_invalid_utf8_is_invalid_json(client):
    response = client.post("/v1/predict", data=b'{"text": "\xff"}', content_type="application/json", headers=AUTH)
    assert_error(response, 400, "INVALID_JSON")


@pytest.mark.parametrize(
    "path, body, details",
    [
        ("/v1/predict", {"text": 5}, {"text": ["Not a valid string."]}),
        ("/v1/predict", {}, {"text": ["Missing data for required field."]}),
        ("/v1/predict", {"text": None}, {"text": ["Field may not be null."]}),
        ("/v1/predict", {"text": "a", "extra": 1}, {"extra": ["Unknown field."]}),
        ("/v1/predict", ["a list"], {"_schema": ["Invalid input type."]}),
        ("/v2/batch_predict", {"texts": "not a list"}, {"texts": ["Not a valid list."]}),
        ("/v2/batch_predict", {"texts": ["ok", 3]}, {"texts": {"1": ["Not a valid string."]}}),
        ("/predict", {"text": "ok", "request_id": 7}, {"request_id": ["Not a valid string."]}),
    ],
)
def test_invalid_payload_names_the_fields(client, path, body, details):
    assert_error(post(client, path, body), 400, "INVALID_PAYLOAD", details=details)


def test_empty_batch(client):
    assert_error(post(client, "/v1/batch_predict", {"texts": []}), 400, "EMPTY_BATCH")


@pytest.mark.parametrize(
    "path, body, message_part, details",
    [
        ("/v1/predict", {"text": "   \n"}, "text is blank", {"text": ["blank"]}),
        ("/v2/predict", {"text": "x" * 2001}, "longer than 2000", {"text": ["too_long"]}),
        ("/v1/batch_predict", {"texts": ["ok"] * 1001}, "limit of 1000", None),
        (
            "/v1/batch_predict",
            {"texts": ["ok", " ", "y" * 2001]},
            "2 of 3 texts",
            {"texts": {"1": ["blank"], "2": ["too_long"]}},
        ),
        ("/predict", {"text": "ok", "request_id": "has space"}, "request_id must be", {"request_id": ["malformed"]}),
    ],
)
def test_unprocessable(client, path, body, message_part, details):
    body = assert_error(post(client, path, body), 422, "UNPROCESSABLE", details=details)
    assert message_part in body["message"]


def test_malformed_request_id_header_is_unprocessable(client):
    assert_error(post(client, "/v1/predict", {"text": "ok"}, {"X-Request-ID": "bad id!"}), 422, "UNPROCESSABLE")


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}, {"X-API-Key": ""}])
def test_unauthorized_same_body_for_missing_or_wrong(client, headers):
    response = client.post("/v1/predict", json={"text": "hello"}, headers={**headers, "X-Request-ID": RID})
    assert_error(response, 401, "UNAUTHORIZED", "missing or invalid API key: send it in the X-API-Key header")


def test_second_key_is_accepted(client):
    assert client.post("/predict", json={"text": "hello"}, headers={"X-API-Key": OTHER_KEY}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/predict", "/v2/batch_predict", "/predict", "/v1/models"])
def test_every_api_route_requires_a_key(client, path):
    assert client.open(path, method="GET" if path.endswith("models") else "POST", json={"text": "x"}).status_code == 401


def test_not_found(client):
    assert_error(client.get("/nowhere"), 404, "NOT_FOUND", "no such endpoint")
    unknown = "no model version 'v3': /v1 and /v2 are the versioned endpoints"
    assert_error(client.get("/v3/predict"), 404, "NOT_FOUND", unknown)


def test_method_not_allowed(client):
    response = client.get("/v1/predict", headers=AUTH)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


def test_payload_too_large_before_parsing():
    client = make_app(MAX_CONTENT_LENGTH=1024).test_client()
    response = client.post(
        "/v1/predict", data=b'{"text": "' + b"a" * 2000 + b'"}', content_type="application/json", headers=AUTH
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_unsupported_media_type(client, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post("/v1/predict", data=b'{"text": "hi"}', headers=AUTH, **kwargs)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_not_ready_while_models_load(monkeypatch):
    release = threading.Event()
    real_load = ModelRegistry.load

    def slow_load(self, name, version=None):
        release.wait(10)
        return real_load(self, name, version)

    monkeypatch.setattr(ModelRegistry, "load", slow_load)
    app = make_app(BACKGROUND_LOAD=True)
    client = app.test_client()
    assert client.get("/readyz").status_code == 503 and client.get("/readyz").json == {"status": "starting"}
    assert client.get("/healthz").status_code == 200
    assert_error(post(client, "/v1/predict", {"text": "hi"}), 503, "NOT_READY")
    release.set()
    for _ in range(100):
        if client.get("/readyz").status_code == 200:
            break
        threading.Event().wait(0.05)
    assert client.get("/readyz").json["status"] == "ready"
    assert post(client, "/v1/predict", {"text": "hi"}).status_code == 200


def test_inference_failure_is_503_not_500(monkeypatch):
    app = make_app()
    model = app.extensions["toxiserve"].inference.models["v1"]

    def broken(normalised, raw):
        raise ValueError("corrupt coefficients")

    monkeypatch.setattr(model, "score_with_oov", broken)
    client = app.test_client()
    body = assert_error(post(client, "/v1/predict", {"text": "hi"}), 503, "INFERENCE_FAILED")
    assert "corrupt" not in body["message"]
    assert post(client, "/v2/predict", {"text": "hi"}).status_code == 200


def test_unexpected_bug_is_internal_error_without_internals(monkeypatch):
    app = make_app()

    def bug(*args, **kwargs):
        raise KeyError("secret internal detail")

    monkeypatch.setattr(app.extensions["toxiserve"], "route", bug)
    body = assert_error(post(app.test_client(), "/predict", {"text": "hi"}), 500, "INTERNAL_ERROR", "internal error")
    assert "secret internal detail" not in str(body)
