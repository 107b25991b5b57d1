"""Logs: one JSON line per request with its facts; the text and the API key never appear."""

import contextlib
import io
import json
import logging

import pytest

from service.observability.logs import RequestIdFilter, json_formatter

from .conftest import make_app

SECRET_TEXT = "zq-SECRET-PAYLOAD-7731 you idiot"
SECRET_KEY = "sk-VERY-SECRET-KEY-4242"


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


def test_request_line_has_facts_but_no_text_or_key(log_lines):
    client = make_app(API_KEYS=f"acme:{SECRET_KEY}").test_client()
    headers = {"X-API-Key": SECRET_KEY}
    client.post("/predict", json={"text": SECRET_TEXT, "request_id": "log-1"}, headers=headers)
    client.post("/v1/batch_predict", json={"texts": [SECRET_TEXT] * 3, "request_id": "log-2"}, headers=headers)
    client.post("/v1/predict", json={"text": SECRET_TEXT, "bogus": SECRET_TEXT}, headers=headers)  # 400
    client.post("/v1/predict", json={"text": SECRET_TEXT}, headers={"X-API-Key": SECRET_KEY + "-wrong"})  # 401
    lines = log_lines()
    raw = json.dumps(lines)
    assert "SECRET-PAYLOAD" not in raw and "VERY-SECRET-KEY" not in raw
    requests = [line for line in lines if line["message"] == "request"]
    assert len(requests) == 4
    routed = requests[0]
    assert routed["request_id"] == "log-1" and routed["route"] == "/predict" and routed["status"] == 200
    assert routed["key_id"] == "acme" and routed["text_length"] == len(SECRET_TEXT)
    assert routed["arm"] in ("stable", "canary") and routed["model_version"] in ("v1", "v2")
    assert routed["rollout_revision"] == 1  # the revision it was routed under
    assert routed["latency_ms"] > 0
    assert requests[1]["text_count"] == 3 and requests[1]["request_id"] == "log-2"
    assert "rollout_revision" not in requests[1]  # a versioned path is not routed
    assert requests[2]["error_code"] == "INVALID_PAYLOAD" and requests[3]["error_code"] == "UNAUTHORIZED"
    assert "key_id" not in requests[3]


def test_every_line_during_a_request_carries_its_id(log_lines, monkeypatch):
    app = make_app()
    inference = app.extensions["toxiserve"].inference

    def failing(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(inference.models["v1"], "score_with_oov", failing)
    app.test_client().post(
        "/v1/predict", json={"text": "x", "request_id": "rid-77"}, headers={"X-API-Key": "test-key-0123456789"}
    )
    during = [line for line in log_lines() if line["logger"] not in ("service.core.state", "service.rollout.state")]
    assert {line["request_id"] for line in during} == {"rid-77"}
    assert any(line["message"].startswith("inference failed") for line in during)


@contextlib.contextmanager
def only_the_app_handler():
    """The root logger as gunicorn's logconfig leaves it: the app's handler alone, on a buffer (set in
    the test's body: pytest adds its capture handlers around each test call)."""
    from service.observability.logs import app_handler

    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    handler = app_handler()
    handler.setStream(io.StringIO())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.handlers[:] = saved
        root.setLevel(saved_level)


def test_the_request_line_written_directly_is_the_line_logging_writes():
    from service.observability.logs import request_log, write_request_line

    fields = {"route": "/v1/predict", "method": "POST", "status": 200, "latency_ms": 1.5}
    fields.update({"request_id": "r-1", "model_version": "v1", "arm": None, "error_code": "X"})
    with only_the_app_handler() as handler:
        assert write_request_line(dict(fields))
        request_log.info("request", extra=dict(fields))
    direct, logged = handler.stream.getvalue().splitlines()
    if json.loads(direct)["ts"] == json.loads(logged)["ts"]:  # the same second
        assert direct == logged
    assert json.loads(direct) == json.loads(logged) | {"ts": json.loads(direct)["ts"]}


def test_the_request_line_goes_through_logging_when_anything_else_would_see_it():
    from service.observability.logs import request_log, write_request_line

    fields = {"route": "/v1/predict", "request_id": "r-2"}
    extra = logging.StreamHandler(io.StringIO())
    with only_the_app_handler() as handler:
        logging.getLogger().addHandler(extra)
        assert not write_request_line(fields)  # a second handler
        logging.getLogger().removeHandler(extra)
        request_log.setLevel(logging.WARNING)
        assert not write_request_line(fields)  # a level that drops it
        request_log.setLevel(logging.NOTSET)
        request_log.addFilter(RequestIdFilter())
        assert not write_request_line(fields)  # a filter on the logger
        request_log.filters.clear()
        assert write_request_line(fields)
    assert handler.stream.getvalue().count('"message":"request"') == 1


class BrokenStream(io.StringIO):
    def write(self, text):
        raise OSError(28, "No space left on device")


def test_a_log_stream_that_fails_never_fails_the_request():
    """stdout closed or the disk full: the direct write declines, and logging reports the failure on
    stderr (handleError) instead of raising into the request, as it always did."""
    from service.observability.logs import request_log, write_request_line

    with only_the_app_handler() as handler:
        handler.setStream(BrokenStream())
        assert not write_request_line({"route": "/v1/predict", "request_id": "r-3"})
        request_log.info("request", extra={"route": "/v1/predict", "request_id": "r-3"})  # does not raise
