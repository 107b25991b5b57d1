"""OpenTelemetry tracing (TOXISERVE_TRACING): a span per request on HTTP and gRPC whose parent is
the caller's W3C traceparent, with the model version, arm and refusal, and the trace id on the log
lines. In process with the SDK's in-memory exporter; on a real gunicorn and a real gRPC process with
the SDK's console exporter (OTEL_TRACES_EXPORTER=console), configured by the standard variables."""

from __future__ import annotations

import json
import time

import pytest
import requests

from service.observability import tracing

from .conftest import API_KEY, AUTH, make_app, post
from .server import Server

pytest.importorskip("opentelemetry.sdk", reason="the tracing extra (pip install -e '.[dev]' brings it)")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=1"}


@pytest.fixture
def traced():
    """An app with tracing on, its spans kept in memory; tracing off again afterwards."""
    app = make_app(TRACING=True)
    exporter = InMemorySpanExporter()
    tracing.configure(True, exporter=exporter)
    yield app.test_client(), exporter
    tracing.configure(False)


def finished(exporter) -> list:
    tracing.flush()
    return list(exporter.get_finished_spans())


def test_a_span_per_request_continues_the_callers_trace(traced):
    client, exporter = traced
    answer = post(client, "/predict", {"text": "have a lovely day"}, TRACEPARENT)
    assert answer.status_code == 200
    (span,) = finished(exporter)
    assert f"{span.context.trace_id:032x}" == TRACE_ID and f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.name == "POST /predict" and span.kind.name == "SERVER"
    attributes = dict(span.attributes)
    assert attributes["http.route"] == "/predict" and attributes["http.response.status_code"] == 200
    assert attributes["toxiserve.model_version"] == answer.json["model_version"]
    assert attributes["toxiserve.arm"] in ("stable", "canary") and "toxiserve.rollout_revision" in attributes
    assert attributes["toxiserve.request_id"] == answer.json["request_id"]
    assert not any("have a lovely day" in str(value) for value in attributes.values())  # never text


def test_a_refusal_is_on_its_span_and_a_request_without_a_parent_starts_a_trace(traced):
    client, exporter = traced
    refused = client.post("/v1/predict", json={"text": "x"}, headers={"X-API-Key": "wrong-key-0123456789"})
    assert refused.status_code == 401
    (span,) = finished(exporter)
    assert span.attributes["toxiserve.error_code"] == "UNAUTHORIZED" and span.parent is None
    assert span.status.status_code.name == "UNSET"  # a 4xx is the client's, not an error of ours


def test_tracing_off_makes_no_span_and_leaves_the_logs_as_they_were():
    client = make_app().test_client()
    exporter = InMemorySpanExporter()
    tracing.configure(False, exporter=exporter)
    assert post(client, "/v1/predict", {"text": "hello"}, TRACEPARENT).status_code == 200
    assert finished(exporter) == [] and tracing.tracer() is None


def spans_in(output: str) -> list[dict]:
    """The console exporter's spans (indented JSON objects) among the JSON log lines."""
    decoder, spans, index = json.JSONDecoder(), [], 0
    while (start := output.find("{", index)) != -1:
        try:
            found, index = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        if isinstance(found, dict) and "context" in found and "attributes" in found:
            spans.append(found)
    return spans


def console_env() -> dict[str, str]:
    return {"TOXISERVE_TRACING": "true", "OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}


def wait_for_spans(read, trace_id: str, count: int = 1) -> list[dict]:
    """The exported spans of a trace, once `count` of them are in the output (bounded wait)."""
    for _ in range(200):
        found = [s for s in spans_in(read()) if s["context"]["trace_id"] == f"0x{trace_id}"]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not {count} spans of trace {trace_id} in the output:\n{read()[-3000:]}")


@pytest.mark.gunicorn
def test_on_gunicorn_each_worker_exports_its_spans_and_logs_the_trace_id():
    with Server(console_env() | {"TOXISERVE_API_KEYS": f"tests:{API_KEY}"}, workers=2) as server:
        headers = {**AUTH, **TRACEPARENT}
        answers = [
            requests.post(f"{server.url}/predict", json={"text": f"text {i}"}, headers=headers, timeout=10).json()
            for i in range(6)
        ]
        spans = wait_for_spans(server.output, TRACE_ID, count=6)
        by_request = {span["attributes"]["toxiserve.request_id"]: span for span in spans}
        for answer in answers:
            span = by_request[answer["request_id"]]
            assert span["parent_id"] == f"0x{PARENT_ID}" and span["name"] == "POST /predict"
            assert span["attributes"]["toxiserve.model_version"] == answer["model_version"]
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith('{"ts"')]
        traced = [line for line in lines if line.get("message") == "request" and line.get("route") == "/predict"]
        assert len(traced) == 6 and {line["trace_id"] for line in traced} == {TRACE_ID}
        assert {line["span_id"] for line in traced} == {span["context"]["span_id"][2:] for span in spans}


@pytest.mark.gunicorn
def test_the_grpc_process_continues_the_callers_trace():
    from service.grpc.gen import toxicity_pb2 as pb

    from .test_grpc import KEY, GrpcProcess

    running = GrpcProcess(console_env())
    try:
        metadata = (*KEY, ("traceparent", TRACEPARENT["traceparent"]))
        answer = running.stub.Predict(pb.PredictRequest(text="have a lovely day"), metadata=metadata)
        (span,) = wait_for_spans(running.output, TRACE_ID)
        assert span["name"] == "Predict" and span["parent_id"] == f"0x{PARENT_ID}"
        assert span["attributes"]["toxiserve.model_version"] == answer.model_version
        assert span["attributes"]["rpc.grpc.status_code"] == 0
        logged = [json.loads(line) for line in running.output().splitlines() if line.startswith('{"ts"')]
        assert any(line.get("message") == "rpc" and line.get("trace_id") == TRACE_ID for line in logged)
    finally:
        running.stop()


@pytest.mark.gunicorn
def test_an_exporter_nobody_provides_stops_the_start_with_one_line():
    env = console_env() | {"TOXISERVE_API_KEYS": f"tests:{API_KEY}", "OTEL_TRACES_EXPORTER": "zipkin_json"}
    with pytest.raises(RuntimeError) as stopped:
        Server(env, workers=1).start()
    assert "OTEL_TRACES_EXPORTER names 'zipkin_json', which no installed package provides" in str(stopped.value)
    assert "Traceback" not in str(stopped.value)


@pytest.mark.gunicorn
def test_a_collector_that_is_down_costs_no_request_and_no_clean_stop():
    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_TRACING": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",  # nothing listens: every export fails
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    server = Server(env, workers=1).start()
    try:
        statuses = [
            requests.post(f"{server.url}/predict", json={"text": f"t {i}"}, headers=AUTH, timeout=30).status_code
            for i in range(20)
        ]
        assert statuses == [200] * 20
        wait_for_log(server.output, "opentelemetry.exporter")  # the failure is logged (as JSON), not raised
    finally:
        code = server.stop()
    assert code == 0, server.output()[-3000:]


def wait_for_log(read, logger: str) -> None:
    for _ in range(200):
        lines = [json.loads(line) for line in read().splitlines() if line.startswith("{")]
        if any(line.get("logger", "").startswith(logger) for line in lines):
            return
        time.sleep(0.05)
    raise AssertionError(f"no log line from {logger}")
