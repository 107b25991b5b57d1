"""The gRPC server: a real process from the Procfile's `grpc:` line on a free 127.0.0.1 port."""

import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.core.bootstrap import build_service, load_config
from service.grpc.gen import toxicity_pb2 as pb
from service.grpc.gen import toxicity_pb2_grpc as rpc
from service.grpc.server import build_server, set_health
from shared_features import ModelRegistry

from .conftest import API_KEY, AUTH, OTHER_KEY, isolated_store, make_app
from .server import REPO_ROOT, free_port, procfile_command

pytestmark = pytest.mark.gunicorn
KEY = [("x-api-key", API_KEY)]
LIMITED = [("x-api-key", "limited-key-0000")]
OTHER = {"X-API-Key": OTHER_KEY}


class GrpcProcess:
    def __init__(self, extra_env=None):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="grpc-", suffix=".log", delete=False)
        env = {
            **os.environ,
            "TOXISERVE_GRPC_PORT": str(self.port),
            "TOXISERVE_BIND_HOST": "127.0.0.1",
            "TOXISERVE_API_KEYS": f"tests:{API_KEY},limited:limited-key-0000",
            "TOXISERVE_RATE_LIMIT": "",
            "TOXISERVE_RATE_LIMITS_PER_KEY": json.dumps({"limited": "3/minute"}),
            "TOXISERVE_STORE_URL": isolated_store(),
            **(extra_env or {}),
        }
        self.store_url = env["TOXISERVE_STORE_URL"]
        self.proc = subprocess.Popen(
            procfile_command("grpc"),
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = rpc.ToxicityStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.statuses = []
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                status = self.health.Check(health_pb2.HealthCheckRequest(service="toxiserve.v1.Toxicity"), timeout=1)
                self.statuses.append(status.status)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.02)
        raise TimeoutError(open(self.log.name).read())

    def output(self) -> str:
        return open(self.log.name).read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.channel.close()


@pytest.fixture(scope="module")
def server():
    running = GrpcProcess()
    yield running
    running.stop()


def call_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        fn(*args, **kwargs)
    return caught.value


def trailing(error) -> dict:
    return dict(error.trailing_metadata() or ())


def test_health_reports_serving_only_after_warm_up(server):
    assert server.statuses[-1] == health_pb2.HealthCheckResponse.SERVING
    assert set(server.statuses[:-1]) <= {health_pb2.HealthCheckResponse.NOT_SERVING}
    lines = [json.loads(line)["message"] for line in server.output().splitlines() if line.startswith("{")]
    assert lines.index("gRPC listening") < lines.index("models loaded and warmed")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_predict_and_batch_equal_http(server, version):
    texts = ["you are a total moron", "lovely weather @bob http://t.co/x", "RT &amp; whatever"]
    http = make_app().test_client()
    http_scores = [
        r["score"] for r in http.post(f"/{version}/batch_predict", json={"texts": texts}, headers=AUTH).json["results"]
    ]
    for text, expected in zip(texts, http_scores, strict=True):
        reply = server.stub.Predict(pb.PredictRequest(text=text, version=version), metadata=KEY)
        assert reply.model_version == version and reply.score == pytest.approx(expected, abs=1e-12, rel=0)
        assert reply.label in ("toxic", "clean") and len(reply.request_id) == 32
    batch = server.stub.BatchPredict(
        pb.BatchPredictRequest(texts=texts, version=version, request_id=f"gb-{version}"), metadata=KEY
    )
    assert batch.request_id == f"gb-{version}" and batch.model_version == version
    assert [r.score for r in batch.results] == pytest.approx(http_scores, abs=1e-12, rel=0)
    model = ModelRegistry().load("toxicity", version)
    assert [r.label for r in batch.results] == ["toxic" if s >= model.threshold else "clean" for s in http_scores]


def test_router_matches_the_http_router(server):
    http = make_app(STORE_URL=server.store_url).test_client()  # one store: one routing key
    for i in range(40):
        request_id = f"route-{i}"
        reply = server.stub.Predict(pb.PredictRequest(text="hello", request_id=request_id), metadata=KEY)
        # Another key: idempotency scopes ids by key, so this is not a replay of the gRPC call.
        expected = http.post("/predict", json={"text": "hello", "request_id": request_id}, headers=OTHER)
        assert reply.model_version == expected.json["model_version"]


def test_routed_calls_carry_the_rollout_revision(server):
    _, routed = server.stub.Predict.with_call(pb.PredictRequest(text="hello"), metadata=KEY)
    assert dict(routed.trailing_metadata())["x-rollout-revision"] == "1"
    _, pinned = server.stub.Predict.with_call(pb.PredictRequest(text="hello", version="v1"), metadata=KEY)
    assert "x-rollout-revision" not in dict(pinned.trailing_metadata() or ())  # a named version is not routed


@pytest.mark.parametrize(
    "request_kwargs, code, error_code",
    [
        ({"text": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "UNPROCESSABLE"),
        ({"text": "x" * 2001}, grpc.StatusCode.INVALID_ARGUMENT, "UNPROCESSABLE"),
        ({"text": "ok", "request_id": "bad id!"}, grpc.StatusCode.INVALID_ARGUMENT, "UNPROCESSABLE"),
        ({"text": "ok", "version": "v9"}, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    ],
)
def test_invalid_arguments(server, request_kwargs, code, error_code):
    error = call_error(server.stub.Predict, pb.PredictRequest(**request_kwargs), metadata=KEY)
    assert error.code() == code and trailing(error)["error-code"] == error_code


def test_empty_batch(server):
    error = call_error(server.stub.BatchPredict, pb.BatchPredictRequest(texts=[]), metadata=KEY)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and trailing(error)["error-code"] == "EMPTY_BATCH"


@pytest.mark.parametrize("metadata", [[], [("x-api-key", "wrong")]])
def test_unauthenticated(server, metadata):
    error = call_error(server.stub.Predict, pb.PredictRequest(text="hi"), metadata=metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "missing or invalid API key: send it in the X-API-Key header"


def test_rate_limit_is_resource_exhausted(server):
    for _ in range(3):
        server.stub.Predict(pb.PredictRequest(text="hi"), metadata=LIMITED)
    error = call_error(server.stub.Predict, pb.PredictRequest(text="hi"), metadata=LIMITED)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailing(error)["error-code"] == "RATE_LIMITED" and int(trailing(error)["retry-after"]) >= 1


def test_idempotency_replay_and_conflict(server):
    first = server.stub.Predict.with_call(pb.PredictRequest(text="same", request_id="gi-1"), metadata=KEY)[0]
    again, call = server.stub.Predict.with_call(pb.PredictRequest(text="same", request_id="gi-1"), metadata=KEY)
    assert again == first and dict(call.trailing_metadata())["idempotent-replayed"] == "true"
    error = call_error(server.stub.Predict, pb.PredictRequest(text="different", request_id="gi-1"), metadata=KEY)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and trailing(error)["error-code"] == "IDEMPOTENCY_CONFLICT"


def test_idempotency_key_metadata_deduplicates_without_a_request_id(server):
    keyed = (*KEY, ("idempotency-key", "gi-meta-1"))
    first = server.stub.Predict(pb.PredictRequest(text="same"), metadata=keyed)
    again, call = server.stub.Predict.with_call(pb.PredictRequest(text="same"), metadata=keyed)
    assert again == first and first.request_id == "gi-meta-1"
    assert dict(call.trailing_metadata())["idempotent-replayed"] == "true"
    error = call_error(server.stub.Predict, pb.PredictRequest(text="other"), metadata=keyed)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    bad = call_error(server.stub.Predict, pb.PredictRequest(text="x"), metadata=(*KEY, ("idempotency-key", "a b")))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_message_size_is_capped(server):
    error = call_error(server.stub.BatchPredict, pb.BatchPredictRequest(texts=["x" * 1000] * 5000), metadata=KEY)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_reflection_lists_the_service(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    services = ProtoReflectionDescriptorDatabase(server.channel).get_services()
    assert "toxiserve.v1.Toxicity" in services and "grpc.health.v1.Health" in services


def counter_value(exposition: str, sample: str) -> float:
    """A sample's value in a Prometheus text exposition (0 when absent)."""
    for line in exposition.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_grpc_process_serves_its_metrics_on_a_port_of_its_own():
    import requests

    metrics_port = free_port()
    running = GrpcProcess({"TOXISERVE_GRPC_METRICS_PORT": str(metrics_port), "TOXISERVE_METRICS_TOKEN": "scrape-me"})
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        token = {"Authorization": "Bearer scrape-me"}
        before = requests.get(url, headers=token, timeout=10)
        assert before.status_code == 200 and before.headers["Content-Type"].startswith("text/plain")
        running.stub.Predict(pb.PredictRequest(text="you are lovely", request_id="metrics-1"), metadata=KEY)
        call_error(running.stub.Predict, pb.PredictRequest(text="hi"), metadata=[])
        after = requests.get(url, headers=token, timeout=10).text
        ok = 'grpc_requests_total{code="OK",method="Predict"}'
        refused = 'grpc_requests_total{code="UNAUTHENTICATED",method="Predict"}'
        assert counter_value(after, ok) == counter_value(before.text, ok) + 1
        assert counter_value(after, refused) == counter_value(before.text, refused) + 1
        assert 'routed_requests_total{arm="stable",status="200"}' in after  # the rollout's evidence too
        refused_scrape = requests.get(url, timeout=10)
        assert refused_scrape.status_code == 401 and refused_scrape.json()["error_code"] == "UNAUTHORIZED"
        elsewhere = requests.get(f"http://127.0.0.1:{metrics_port}/", headers=token, timeout=10)
        assert elsewhere.status_code == 404 and elsewhere.json()["error_code"] == "NOT_FOUND"
        # A client that connects and stalls is served around, then dropped (not held for ever).
        import socket

        with socket.create_connection(("127.0.0.1", metrics_port)) as stalled:
            stalled.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
            assert requests.get(url, headers=token, timeout=10).status_code == 200
            stalled.settimeout(60)  # a bound on the test, far past the server's idle limit
            assert stalled.recv(1024) == b""  # closed by the server
    finally:
        running.stop()
    assert running.proc.returncode == 0 and "Traceback" not in running.output()


def test_a_taken_metrics_port_is_one_line_at_start():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "TOXISERVE_GRPC_PORT": str(free_port()),
            "TOXISERVE_GRPC_METRICS_PORT": str(port),
            "TOXISERVE_BIND_HOST": "127.0.0.1",
            "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
            "TOXISERVE_STORE_URL": isolated_store(),
        }
        result = subprocess.run(
            procfile_command("grpc"), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    assert f"Error: cannot serve metrics on 127.0.0.1:{port}: Address already in use" in output
    assert "models loaded" not in output  # said before the models load


def test_not_ready_is_unavailable_and_health_flips(monkeypatch):
    release = threading.Event()
    real_load = ModelRegistry.load
    monkeypatch.setattr(ModelRegistry, "load", lambda self, *a: release.wait(10) and real_load(self, *a))
    service = build_service(load_config({"API_KEYS": f"tests:{API_KEY}", "STORE_URL": isolated_store()}))
    server, health_servicer, port = build_server(service, 0, "127.0.0.1", threads=4)
    set_health(health_servicer, False)
    server.start()
    loader = threading.Thread(target=lambda: (service.load_models(), set_health(health_servicer, True)))
    loader.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="toxiserve.v1.Toxicity")
        assert health.Check(check).status == health_pb2.HealthCheckResponse.NOT_SERVING
        error = call_error(rpc.ToxicityStub(channel).Predict, pb.PredictRequest(text="hi"), metadata=KEY)
        assert error.code() == grpc.StatusCode.UNAVAILABLE and trailing(error)["error-code"] == "NOT_READY"
        release.set()
        loader.join(10)
        assert health.Check(check).status == health_pb2.HealthCheckResponse.SERVING
        assert rpc.ToxicityStub(channel).Predict(pb.PredictRequest(text="hi"), metadata=KEY).label
    finally:
        release.set()
        server.stop(0)


def test_sigterm_drains_in_flight_rpcs():
    server = GrpcProcess()
    heavy = pb.BatchPredictRequest(
        texts=["a rather long sentence to score, again and again " * 40] * 1000, version="v2"
    )
    outcome = {}

    def slow_call():
        try:
            outcome["reply"] = server.stub.BatchPredict(heavy, metadata=KEY, timeout=60)
        except grpc.RpcError as error:
            outcome["error"] = error

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # Draining: new work is refused at the door, as the web process refuses new connections.
    refused = call_error(server.stub.Predict, pb.PredictRequest(text="late"), metadata=KEY, timeout=5)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    caller.join(60)
    assert "reply" in outcome, outcome.get("error")
    assert len(outcome["reply"].results) == 1000
    assert server.proc.wait(30) == 0
    assert "draining" in server.output()
    server.channel.close()


def test_committed_stubs_match_the_proto():
    result = subprocess.run(
        [os.sys.executable, "-m", "service.grpc.gen", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
