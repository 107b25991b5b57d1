"""Slow, silent and malformed clients against a real gunicorn: they cost sockets, never threads."""

import json
import socket
import threading
import time

import pytest
import requests

from .server import Server

pytestmark = pytest.mark.gunicorn

KEY = "k-slow-0001112222"


@pytest.fixture(scope="module")
def server():
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_THREADS": "4",
        "TOXISERVE_REQUEST_READ_TIMEOUT": "2",
    }
    with Server(env, workers=2) as running:
        yield running


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one response; the server closes after these answers."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def legit_requests(server, count: int) -> list[int]:
    statuses = []
    with requests.Session() as session:
        for i in range(count):
            try:
                response = session.post(
                    f"{server.url}/v1/predict", json={"text": f"hello {i}"}, headers={"X-API-Key": KEY}, timeout=5
                )
                statuses.append(response.status_code)
            except requests.RequestException:
                statuses.append(0)
            time.sleep(0.05)
    return statuses


def test_sixteen_slow_clients_hold_no_thread(server):
    """More slow connections than the service has threads (2 workers x 4): headers that never end,
    a body trickled a byte a second, a Content-Length larger than the body. Before the worker
    buffered requests, 8 such connections took every thread and every legitimate request timed out."""
    attackers = []
    for i in range(16):
        sock = connect(server)
        if i % 3 == 0:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
        elif i % 3 == 1:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            sock.sendall(b"Content-Length: 100\r\n\r\n{")
        else:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{}")  # never more
        attackers.append(sock)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for sock in attackers[::3]:
                try:
                    sock.send(b"a")
                except OSError:
                    pass
            stop.wait(1)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        statuses = legit_requests(server, 60)  # about 3 s: longer than the 2 s read timeout
    finally:
        stop.set()
        trickler.join()
    assert statuses == [200] * 60
    # Each attacker got a JSON 408 once its request missed the read deadline, then was closed.
    for sock in attackers:
        status, headers, body = read_response(sock)
        assert status == 408 and body["error_code"] == "REQUEST_TIMEOUT" and headers["connection"] == "close"
        sock.close()


def test_forty_silent_connections_do_not_stall_the_service(server):
    silent = [connect(server) for _ in range(40)]
    try:
        assert legit_requests(server, 20) == [200] * 20
    finally:
        for sock in silent:
            sock.close()


def raw_exchange(server, payload: bytes) -> tuple[int, dict, dict]:
    with connect(server) as sock:
        sock.sendall(payload)
        return read_response(sock)


def test_chunked_body_over_the_cap_is_413_not_cut_short(server):
    chunk = b"x" * (1024 * 1024)
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"  # 5 MiB > 4 MiB
    status, _, answer = raw_exchange(server, head + body)
    assert status == 413 and answer["error_code"] == "PAYLOAD_TOO_LARGE" and answer["request_id"]


def test_declared_length_over_the_cap_is_413_before_the_body_is_sent(server):
    status, _, body = raw_exchange(server, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
    assert status == 413 and body["error_code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    ("payload", "status", "error_code"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI_TOO_LONG"),
        (
            b"GET /readyz HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
            431,
            "HEADERS_TOO_LARGE",
        ),
        (b"GET /readyz HTTP/1.1\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n", 431, "HEADERS_TOO_LARGE"),
        (b"NOT A REQUEST LINE\r\n\r\n", 400, "MALFORMED_REQUEST"),
        (b"GET /readyz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "MALFORMED_REQUEST"),
        (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "MALFORMED_REQUEST"),
    ],
    ids=["long-url", "header-flood", "huge-header", "bad-request-line", "bad-version", "bad-chunk-size"],
)
def test_gunicorns_own_refusals_follow_the_json_error_contract(server, payload, status, error_code):
    got_status, headers, body = raw_exchange(server, payload)
    assert (got_status, body["error_code"]) == (status, error_code)
    assert headers["content-type"] == "application/json"
    assert set(body) == {"error_code", "message", "request_id"} and headers["x-request-id"] == body["request_id"]


def test_expect_100_continue_is_answered_once_and_the_request_served(server):
    body = json.dumps({"text": "have a lovely day"}).encode()
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.count(b"100 Continue") == 0


def test_deeply_nested_json_is_invalid_json_not_a_500(server):
    response = requests.post(
        f"{server.url}/v1/predict",
        data="[" * 100_000 + "]" * 100_000,
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400 and response.json()["error_code"] == "INVALID_JSON"


def test_pipelined_requests_on_one_connection_are_each_answered(server):
    body = json.dumps({"text": "nice work"}).encode()
    one = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    last = one.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    with connect(server) as sock:
        sock.sendall(one + one + last)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3
