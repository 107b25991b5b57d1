"""The real server: gunicorn (2 workers) started from the Procfile's command on 127.0.0.1."""

import json
import socket
import time

import numpy as np
import pytest
import requests

from .conftest import API_KEY
from .server import Server

pytestmark = pytest.mark.gunicorn

AUTH = {"X-API-Key": API_KEY}
SECRET_TEXT = "qq-SECRET-TEXT-9173 idiot"


@pytest.fixture(scope="module")
def server():
    with Server({"TOXISERVE_API_KEYS": f"tests:{API_KEY}"}) as running:
        yield running


def test_readiness_flips_only_after_warm_up(server):
    # preload: the socket opens only after the master loaded and warmed the models, so nothing
    # before that can answer; every readiness answer the client ever saw was "ready".
    assert set(server.readyz_statuses) == {200}
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    warmed = messages.index("models loaded and warmed")
    listening = next(i for i, m in enumerate(messages) if m.startswith("Listening at"))
    assert warmed < listening


def test_predictions_equal_the_artifacts_predict_proba(server, shipped_registry, reference_proba):
    texts = ["you are such a moron", "great game last night", "@bob http://t.co/z lol", "RT &amp; meh"] * 5
    for version in ("v1", "v2"):
        expected = reference_proba(version, texts)
        got = [
            requests.post(f"{server.url}/{version}/predict", json={"text": t}, headers=AUTH, timeout=5).json()["score"]
            for t in texts
        ]
        np.testing.assert_allclose(got, expected, atol=1e-12, rtol=0)
        batch = requests.post(f"{server.url}/{version}/batch_predict", json={"texts": texts}, headers=AUTH, timeout=5)
        np.testing.assert_allclose([r["score"] for r in batch.json()["results"]], expected, atol=1e-12, rtol=0)


def test_router_and_errors_over_http(server):
    routed = requests.post(
        f"{server.url}/predict", json={"text": "hello", "request_id": "g-1"}, headers=AUTH, timeout=5
    )
    assert routed.status_code == 200 and routed.json()["model_version"] in ("v1", "v2")
    assert routed.headers["X-Request-ID"] == "g-1"
    bad = requests.post(
        f"{server.url}/v1/predict", data="{", headers={**AUTH, "Content-Type": "application/json"}, timeout=5
    )
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_JSON"
    missing = requests.get(f"{server.url}/nope", timeout=5)
    assert missing.status_code == 404 and missing.headers["Content-Type"] == "application/json"


def test_logs_never_contain_text_or_key(server):
    requests.post(f"{server.url}/predict", json={"text": SECRET_TEXT}, headers=AUTH, timeout=5)
    requests.post(f"{server.url}/v1/predict", json={"text": SECRET_TEXT}, headers={"X-API-Key": "wrong"}, timeout=5)
    time.sleep(0.2)
    output = server.output()
    assert "SECRET-TEXT" not in output and API_KEY not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(line.get("route") == "/predict" and line["message"] == "request" for line in lines)


def test_sigterm_drains_an_in_flight_request(shipped_registry):
    with Server({"TOXISERVE_API_KEYS": f"tests:{API_KEY}"}) as server:
        body = json.dumps({"text": "finish me please", "request_id": "drain-1"}).encode()
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(head + body[:10])  # the request is in flight: the app is reading its body
            time.sleep(0.3)
            server.terminate()
            time.sleep(0.5)
            # Draining: new work is refused at the door, as gRPC refuses new RPCs; the in-flight request finishes.
            with pytest.raises(requests.ConnectionError):
                requests.get(f"{server.url}/healthz", timeout=5)
            conn.sendall(body[10:])
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
        status_line, _, rest = response.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 200"), response[:200]
        payload = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert payload["request_id"] == "drain-1"
        assert abs(payload["score"] - shipped_registry.load("toxicity", "v1").score(["finish me please"])[0]) < 1e-12
        assert server.proc.wait(15) == 0
        assert "draining" in server.output()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/healthz", timeout=2)


def test_open_inference_protocol_over_http(server, shipped_registry):
    metadata = requests.get(f"{server.url}/v2/models/toxicity", timeout=5).json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    request = {
        "id": "42",
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["you idiot", "nice one"]}],
        "outputs": [{"name": "score"}],
    }
    reply = requests.post(f"{server.url}/v2/models/toxicity/versions/v1/infer", json=request, headers=AUTH, timeout=5)
    assert reply.status_code == 200 and reply.json()["id"] == "42"
    expected = shipped_registry.load("toxicity", "v1").score(["you idiot", "nice one"])
    np.testing.assert_allclose(reply.json()["outputs"][0]["data"], expected, atol=1e-12, rtol=0)
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).json()["ready"] is True


def test_the_date_header_is_formatted_once_a_second_and_reads_the_same(server):
    """The worker formats the Date header once a second (service/http/wsgi_server.py): the text is
    email.utils' for that second, and every response carries a valid, current one."""
    import email.utils

    from service.http.wsgi_server import http_date_once_a_second

    for _ in range(3):  # a second may turn between the two calls: then the next try is in one second
        before = email.utils.formatdate(time.time(), usegmt=True)
        cached = http_date_once_a_second()
        if before == email.utils.formatdate(time.time(), usegmt=True):
            break
    assert cached == before
    assert http_date_once_a_second(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    answered = requests.post(f"{server.url}/v1/predict", json={"text": "hi"}, headers=AUTH, timeout=5)
    sent = email.utils.parsedate_to_datetime(answered.headers["Date"]).timestamp()
    assert abs(sent - time.time()) < 120  # the server's clock, formatted right (not a timing bound)
