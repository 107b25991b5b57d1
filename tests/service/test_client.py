"""The retrying client against a scripted HTTP server on 127.0.0.1 (and, in test_gunicorn_hardening, the real one)."""

import json
import re
import threading

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from toxiserve.client import ClientError, ToxiserveClient


class ScriptedServer:
    """Answers each request with the next (status, headers) from a script; records what it saw."""

    def __init__(self, script):
        self.script = list(script)
        self.seen = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @Request.application
    def app(self, request):
        body = request.get_json(silent=True) or {}
        self.seen.append(
            {
                "path": request.path,
                "header_id": request.headers.get("X-Request-ID"),
                "body_id": body.get("request_id"),
                "key": request.headers.get("X-API-Key"),
            }
        )
        status, headers = self.script.pop(0) if self.script else (200, {})
        if status == 200:
            payload = {"label": "clean", "score": 0.1, "model_version": "v1", "request_id": body.get("request_id")}
        else:
            payload = {
                "error_code": {429: "RATE_LIMITED", 503: "OVERLOADED", 422: "UNPROCESSABLE"}.get(status, "X"),
                "message": "scripted",
                "request_id": body.get("request_id"),
            }
        return Response(json.dumps(payload), status=status, headers=headers, mimetype="application/json")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def make_client(url, **kwargs):
    sleeps = []
    client = ToxiserveClient(url, api_key="k-1", sleep=sleeps.append, random_fraction=lambda: 1.0, **kwargs)
    return client, sleeps


def test_a_load_balancers_502_and_504_are_retried_with_one_request_id():
    with ScriptedServer([(502, {}), (504, {}), (200, {})]) as server:
        client, _ = make_client(server.url)
        result = client.predict("hello")
    assert result["label"] == "clean" and len(server.seen) == 3
    assert len({s["header_id"] for s in server.seen}) == 1


def test_503_twice_then_200_succeeds_with_one_request_id():
    with ScriptedServer([(503, {"Retry-After": "1"}), (503, {}), (200, {})]) as server:
        client, sleeps = make_client(server.url)
        result = client.predict("hello")
    assert result["label"] == "clean"
    assert len(server.seen) == 3
    ids = {s["header_id"] for s in server.seen} | {s["body_id"] for s in server.seen}
    assert len(ids) == 1 and result["request_id"] in ids
    assert server.seen[0]["path"] == "/predict" and server.seen[0]["key"] == "k-1"
    assert sleeps == [1.0, 0.2]  # Retry-After honoured (1 s > jittered 0.1 s), then backoff base * 2^1


def test_429_is_retried_and_given_request_id_kept():
    with ScriptedServer([(429, {"Retry-After": "2"}), (200, {})]) as server:
        client, sleeps = make_client(server.url)
        result = client.predict("hello", version="v2", request_id="mine-1")
    assert result["request_id"] == "mine-1" and server.seen[0]["path"] == "/v1/models/v2/predict"
    assert sleeps == [2.0]


def test_client_errors_are_not_retried():
    with ScriptedServer([(422, {})]) as server:
        client, sleeps = make_client(server.url)
        with pytest.raises(ClientError) as caught:
            client.batch_predict(["  "], version="v1", request_id="bad-1")
    assert caught.value.status == 422 and caught.value.error_code == "UNPROCESSABLE"
    assert caught.value.request_id == "bad-1" and sleeps == [] and len(server.seen) == 1


def test_gives_up_after_max_retries():
    with ScriptedServer([(503, {})] * 10) as server:
        client, sleeps = make_client(server.url, max_retries=2)
        with pytest.raises(ClientError) as caught:
            client.predict("x")
    assert caught.value.status == 503 and len(server.seen) == 3 and len(sleeps) == 2


def test_connection_errors_are_retried_then_raised_as_client_errors():
    from .server import free_port

    client, sleeps = make_client(f"http://127.0.0.1:{free_port()}", max_retries=3)
    with pytest.raises(ClientError) as raised:
        client.predict("x", request_id="down-1")
    assert (raised.value.status, raised.value.error_code, raised.value.request_id) == (0, "CONNECTION_FAILED", "down-1")
    assert len(sleeps) == 3


def test_retries_stop_when_the_retry_budget_is_spent():
    from .server import free_port

    # Each attempt fails at once; the budget (not max_retries) ends the retries.
    client = ToxiserveClient(
        f"http://127.0.0.1:{free_port()}", "k", max_retries=1000, retry_budget=0.3, backoff_base=0.05, backoff_cap=0.05
    )
    with pytest.raises(ClientError):
        client.predict("x")


def test_default_retry_budget_outlasts_what_the_server_can_make_a_retry_wait():
    from service.settings import DefaultConfig

    client = ToxiserveClient("http://127.0.0.1:1", "k")
    server_worst = DefaultConfig.IDEMPOTENCY_PENDING_TTL + DefaultConfig.IDEMPOTENCY_WAIT
    assert client.retry_budget > server_worst and client.timeout[1] > DefaultConfig.REQUEST_DEADLINE


def test_full_jitter_bounds():
    client = ToxiserveClient("http://127.0.0.1:1", "k", backoff_base=0.1, backoff_cap=1.0, random_fraction=lambda: 0.5)
    assert [client.backoff(a, None) for a in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert client.backoff(0, 120) == 30.0  # a huge Retry-After is capped


def test_an_answer_cut_mid_body_is_retried_under_the_same_request_id():
    """A server killed while sending its answer: headers, part of the body, then the connection
    closes. The client must resend (the request id makes it a replay), not raise."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port, seen = listener.getsockname()[1], []
    body = json.dumps({"label": "clean", "score": 0.1, "model_version": "v1", "request_id": "cut-1"}).encode()

    def serve():
        for attempt in range(2):
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                seen.append(re.search(rb"Idempotency-Key: (\S+)", request).group(1))
                if attempt == 0:  # cut: chunked headers and half a chunk, then gone
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                    conn.sendall(b"%x\r\n%s" % (len(body), body[:10]))
                else:
                    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
                        body
                    )
                    conn.sendall(head + body)
        listener.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client, sleeps = make_client(f"http://127.0.0.1:{port}", max_retries=3)
    assert client.predict("x", request_id="cut-1")["request_id"] == "cut-1"
    server.join(10)
    assert seen == [b"cut-1", b"cut-1"] and len(sleeps) == 1
