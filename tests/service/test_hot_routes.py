"""The scoring routes' fast lane (service/http/hot_routes.py) answers exactly as the Flask routes do.

Two apps with the same configuration take the same requests in the same order: one as shipped, one
with the fast lane taken out (its `flask_wsgi`, the Flask app alone). Status, body and headers must
match, refusals and replays included; and the fast lane must really have answered the requests it
claims (the Flask app under it is watched), while everything it leaves to Flask still reaches Flask.
"""

from __future__ import annotations

import json
import logging

import pytest
from marshmallow import Schema, ValidationError

from service.http.hot_routes import HotRoutes
from service.http.views.predict import BATCH_SCHEMA, PREDICT_SCHEMA
from service.observability import tracing

from .conftest import API_KEY, make_app

# Fields that differ between two runs of the same request: generated ids, timings, the server's clock.
VOLATILE_HEADERS = {"Date", "X-Request-ID"}

REQUESTS = [
    # (path, body, extra headers); None for the body: send the raw `data` below instead
    ("/v1/predict", {"text": "you are a complete idiot", "request_id": "same-1"}, {}),
    ("/v2/predict", {"text": "have a lovely day", "request_id": "same-2"}, {}),
    ("/predict", {"text": "route me", "request_id": "same-3"}, {}),
    ("/predict", {"text": "route me", "request_id": "same-3"}, {}),  # an idempotent replay
    ("/predict", {"text": "route me again", "request_id": "same-3"}, {}),  # same key, other text: 409
    ("/v1/batch_predict", {"texts": ["a", "you idiot"], "request_id": "same-4"}, {}),
    ("/v1/batch_predict", {"texts": ["fine", ""], "on_error": "item", "request_id": "same-5"}, {}),
    ("/v2/batch_predict", {"texts": ["fine", ""], "request_id": "same-6"}, {}),  # 422, whole batch
    ("/v1/models/v2/predict", {"text": "named version", "request_id": "same-7"}, {}),
    ("/v1/models/v9/predict", {"text": "no such version", "request_id": "same-8"}, {}),
    ("/v1/models/v1/batch_predict", {"texts": ["x"], "categories": True, "request_id": "same-9"}, {}),
    ("/v1/predict", {"text": "explain me, you idiot", "explain": 3, "request_id": "same-10"}, {}),
    ("/v1/predict", {"text": "no key"}, {"X-API-Key": None}),
    ("/v1/predict", {"text": "bearer"}, {"X-API-Key": None, "Authorization": "Bearer x"}),
    ("/v1/predict", {"text": "bad id"}, {"X-Request-ID": "bad id with spaces"}),
    ("/v1/predict", {"text": "bad key"}, {"Idempotency-Key": "x" * 200}),
    ("/v1/predict", {"text": "header id"}, {"X-Request-ID": "corr-1"}),
    ("/v1/predict", {"text": "header key"}, {"Idempotency-Key": "idem-1"}),
    ("/v1/predict", {"text": "header key"}, {"Idempotency-Key": "idem-1"}),  # replayed by header
    ("/v1/predict", {"texts": ["wrong shape"]}, {}),
    ("/v1/predict", ["not", "an", "object"], {}),
    ("/v1/predict", {"text": 42}, {}),
    ("/v1/predict", {"text": "x", "request_id": "bad id"}, {}),
    ("/v1/predict", {"text": ""}, {}),
    ("/v1/predict", None, {}),  # not JSON
]


def _twin_apps():
    config = {"RATE_LIMIT": "1000/minute"}  # on: its headers are part of every answer
    shipped, flask_only = make_app(**config), make_app(**config)
    assert isinstance(shipped.wsgi_app, HotRoutes)
    flask_only.wsgi_app = flask_only.wsgi_app.flask_wsgi
    return shipped, flask_only


def _send(app, path, body, extra):
    headers = {"X-API-Key": API_KEY, **extra}
    headers = {name: value for name, value in headers.items() if value is not None}
    if body is None:
        return app.test_client().post(
            path, data=b'{"text": "unterminated', headers=headers, content_type="application/json"
        )
    return app.test_client().post(path, json=body, headers=headers)


def _comparable(response):
    body = json.loads(response.get_data())
    if isinstance(body, dict) and body.get("request_id") == response.headers.get("X-Request-ID"):
        # a generated id: equal in kind (32 hex digits), never in value
        if body.get("request_id") and len(body["request_id"]) == 32:
            body["request_id"] = "<generated>"
    headers = sorted((k, v) for k, v in response.headers.items() if k not in VOLATILE_HEADERS)
    return response.status_code, body, headers


def test_the_fast_lane_answers_as_the_flask_routes_do(monkeypatch):
    shipped, flask_only = _twin_apps()
    hot: HotRoutes = shipped.wsgi_app
    reached_flask = []
    flask_wsgi = hot.flask_wsgi
    monkeypatch.setattr(hot, "flask_wsgi", lambda environ, start: reached_flask.append(1) or flask_wsgi(environ, start))
    for path, body, extra in REQUESTS:
        ours, theirs = _send(shipped, path, body, extra), _send(flask_only, path, body, extra)
        assert _comparable(ours) == _comparable(theirs), (path, body, extra)
        assert ours.headers["X-Request-ID"]
    assert reached_flask == [], "every request above is the fast lane's to answer"
    statuses = {_send(shipped, p, b, e).status_code for p, b, e in REQUESTS}
    assert {200, 400, 401, 404, 409, 422} <= statuses  # the comparison covered refusals, not only answers


@pytest.mark.parametrize(
    "how",
    ["text/plain body", "chunked body", "GET", "other route", "trailing slash", "tracing on", "over the cap"],
)
def test_what_the_fast_lane_leaves_to_flask_reaches_flask(how, monkeypatch):
    app = make_app(MAX_CONTENT_LENGTH=4096)
    hot: HotRoutes = app.wsgi_app
    reached_flask = []
    flask_wsgi = hot.flask_wsgi
    monkeypatch.setattr(hot, "flask_wsgi", lambda environ, start: reached_flask.append(1) or flask_wsgi(environ, start))
    client, headers = app.test_client(), {"X-API-Key": API_KEY}
    body = json.dumps({"text": "hello there"})
    if how == "text/plain body":
        response = client.post("/v1/predict", data=body, headers=headers, content_type="text/plain")
        assert response.status_code == 415
    elif how == "chunked body":  # no Content-Length: the length is known only once read (gunicorn's framing)
        from werkzeug.test import EnvironBuilder

        environ = EnvironBuilder(
            path="/v1/predict", method="POST", data=body, headers=headers, content_type="application/json"
        ).get_environ()
        del environ["CONTENT_LENGTH"]
        environ["wsgi.input_terminated"] = True
        status = []
        b"".join(app.wsgi_app(environ, lambda line, _headers: status.append(line)))
        assert status == ["200 OK"]
    elif how == "GET":
        assert client.get("/v1/predict", headers=headers).status_code == 405
    elif how == "other route":
        assert client.post("/v1/feedback", json={"request_id": "x", "label": "toxic"}, headers=headers).status_code
    elif how == "trailing slash":
        assert client.post("/v1/predict/", json={"text": "x"}, headers=headers).status_code == 404
    elif how == "tracing on":
        monkeypatch.setattr(tracing, "enabled", lambda: True)
        monkeypatch.setattr(tracing, "start_span", lambda *args: (None, None))
        assert client.post("/v1/predict", json={"text": "x"}, headers=headers).status_code == 200
    elif how == "over the cap":
        response = client.post("/v1/predict", json={"text": "x" * 5000}, headers=headers)
        assert response.status_code == 413
        assert response.json["error_code"] == "PAYLOAD_TOO_LARGE"
    assert reached_flask == [1]


def test_an_unexpected_error_in_the_fast_lane_is_a_json_500_with_its_log_line(monkeypatch, caplog):
    app = make_app()
    plane = app.extensions["toxiserve"].dataplane

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(plane, "score", broken)
    with caplog.at_level(logging.INFO):
        response = app.test_client().post("/v1/predict", json={"text": "x"}, headers={"X-API-Key": API_KEY})
    assert response.status_code == 500
    assert response.json["error_code"] == "INTERNAL_ERROR"
    assert "secret internals" not in response.get_data(as_text=True)
    assert response.json["request_id"] == response.headers["X-Request-ID"]
    lines = [r for r in caplog.records if r.name == "toxiserve.request"]
    assert [(r.route, r.status, r.error_code) for r in lines] == [("/v1/predict", 500, "INTERNAL_ERROR")]
    # the log line of the unexpected error carries the request's id, as Flask's handler's does
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.request_id == response.json["request_id"]


BODIES = [
    {"text": "hi"},
    {"text": "hi", "explain": True, "categories": False},
    {"text": "hi", "explain": 3, "categories": True, "request_id": "r-1"},
    {"text": "hi", "explain": 0},
    {"text": "hi", "explain": 51},
    {"text": "hi", "explain": -1},
    {"text": "hi", "explain": 2.0},
    {"text": "hi", "categories": 1},
    {"text": "hi", "request_id": 5},
    {"text": 5},
    {"text": None},
    {"text": "x", "unknown": 1},
    {},
    {"texts": ["a", "b"]},
    {"texts": ["a"], "on_error": "item", "explain": False},
    {"texts": [], "categories": True},
    {"texts": ["a", 1]},
    {"texts": "a"},
    {"texts": ["a"], "on_error": "skip"},
    {"texts": ["a"], "text": "both"},
]


@pytest.mark.parametrize("schema", [PREDICT_SCHEMA, BATCH_SCHEMA], ids=["predict", "batch"])
@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_schemas_plain_bodies_load_as_marshmallow_loads_them(schema, body):
    """The scoring schemas load common valid bodies without marshmallow: the result, or the refusal,
    must be marshmallow's own."""

    def outcome(load):
        try:
            return load(body)
        except ValidationError as error:
            return error.messages

    marshmallow_load = lambda data: Schema.load(schema, data)  # noqa: E731
    assert outcome(schema.load) == outcome(marshmallow_load)


def test_the_plain_path_knows_exactly_the_schemas_fields():
    """A field added to (or removed from) a schema must be taught to its plain path too, or the plain
    path would load a body marshmallow loads otherwise."""
    from service.core.schemas import _BATCH_KEYS, _PREDICT_KEYS

    assert set(PREDICT_SCHEMA.load_fields) == _PREDICT_KEYS
    assert set(BATCH_SCHEMA.load_fields) == _BATCH_KEYS


def test_the_plain_path_really_takes_the_common_bodies():
    assert PREDICT_SCHEMA._plain({"text": "hi", "request_id": "r"}) == {
        "text": "hi",
        "categories": False,
        "explain": 0,
        "request_id": "r",
    }
    assert BATCH_SCHEMA._plain({"texts": ["a"], "explain": True}) is not None
    assert PREDICT_SCHEMA._plain({"text": "hi", "unknown": 1}) is None  # marshmallow refuses it
