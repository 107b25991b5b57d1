"""One data plane, every transport: the same texts give the same scores and versions, and the same
refusals come with the same counts, through HTTP, OIP REST (binary and JSON), OIP gRPC and gRPC
Toxicity. The clients are the field's own: requests, tritonclient.http and .grpc, the gRPC stubs.

The web server and the gRPC process share keys, store and metrics directory (so the web's
/metrics counts both), as two processes on one host would.
"""

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests

tritonclient_http = pytest.importorskip("tritonclient.http", reason="tritonclient is in the dev extra")
import tritonclient.grpc as tritonclient_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from service.grpc.gen import toxicity_pb2 as pb  # noqa: E402

from .conftest import API_KEY, isolated_store  # noqa: E402
from .server import Server  # noqa: E402
from .test_grpc import GrpcProcess  # noqa: E402
from .test_metrics import value  # noqa: E402

pytestmark = pytest.mark.gunicorn

TEXTS = ["you are a complete idiot", "have a wonderful day", "what a stupid take", "thanks, that helped"]
LIMITED = {"limited-http": "k-limited-http-0001", "limited-grpc": "k-limited-grpc-0002"}
HEAVY = [(f"text {i}: long and winding, for the char n-grams to chew on " * 40)[:2000] for i in range(1000)]


@pytest.fixture(scope="module")
def both():
    metrics_dir = tempfile.mkdtemp(prefix="toxiserve-metrics-parity-")
    keys = ",".join([f"tests:{API_KEY}", *(f"{key_id}:{key}" for key_id, key in LIMITED.items())])
    shared = {
        "TOXISERVE_API_KEYS": keys,
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_RATE_LIMITS_PER_KEY": json.dumps(dict.fromkeys(LIMITED, "2/minute")),
        "TOXISERVE_STORE_URL": isolated_store(),
        "TOXISERVE_MAX_IN_FLIGHT": "1",
        "TOXISERVE_REQUEST_DEADLINE": "60",
    }
    with Server({**shared, "TOXISERVE_METRICS_DIR": metrics_dir}, workers=1) as web:
        rpc = GrpcProcess({**shared, "PROMETHEUS_MULTIPROC_DIR": metrics_dir})
        try:
            yield web, rpc
        finally:
            rpc.stop()


def refused(web, code: str) -> float:
    return value(requests.get(f"{web.url}/metrics", timeout=10).text, "requests_refused_total", error_code=code)


def http(web, path, body, key=API_KEY, **headers):
    return requests.post(f"{web.url}{path}", json=body, headers={"X-API-Key": key, **headers}, timeout=120)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_same_texts_score_the_same_on_every_transport(both, shipped_registry, version, reference_proba):
    web, rpc = both
    expected = reference_proba(version, TEXTS)
    key = [("x-api-key", API_KEY)]
    results = {
        "http predict": [http(web, f"/{version}/predict", {"text": t}).json()["score"] for t in TEXTS],
        "http batch": [r["score"] for r in http(web, f"/{version}/batch_predict", {"texts": TEXTS}).json()["results"]],
        "grpc Predict": [
            rpc.stub.Predict(pb.PredictRequest(text=t, version=version), metadata=key).score for t in TEXTS
        ],
        "grpc BatchPredict": [
            r.score
            for r in rpc.stub.BatchPredict(pb.BatchPredictRequest(texts=TEXTS, version=version), metadata=key).results
        ],
    }
    with tritonclient_http.InferenceServerClient(f"127.0.0.1:{web.port}") as triton:
        for binary in (True, False):
            tensor = tritonclient_http.InferInput("text", [len(TEXTS)], "BYTES")
            tensor.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=binary)
            outputs = [tritonclient_http.InferRequestedOutput("score", binary_data=binary)]
            answer = triton.infer(
                "toxicity", [tensor], model_version=version, outputs=outputs, headers={"X-API-Key": API_KEY}
            )
            results[f"oip rest binary={binary}"] = answer.as_numpy("score").tolist()
    triton = tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{rpc.port}")
    tensor = tritonclient_grpc.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=object))
    results["oip grpc"] = (
        triton.infer("toxicity", [tensor], model_version=version, headers={"x-api-key": API_KEY})
        .as_numpy("score")
        .tolist()
    )
    triton.close()
    for path, scores in results.items():
        assert np.max(np.abs(np.array(scores) - expected)) <= 1e-12, path


def test_401_on_every_transport_is_counted_alike(both):
    web, rpc = both
    before = refused(web, "UNAUTHORIZED")
    assert http(web, "/v1/predict", {"text": "x"}, key="wrong").status_code == 401
    error = rpc_error(rpc.stub.Predict, pb.PredictRequest(text="x"), metadata=[("x-api-key", "wrong")])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dict(error.trailing_metadata())["error-code"] == "UNAUTHORIZED"
    assert refused(web, "UNAUTHORIZED") == before + 2


def test_429_on_every_transport_with_its_retry_hint(both):
    web, rpc = both
    before = refused(web, "RATE_LIMITED")
    over = http(web, "/v1/batch_predict", {"texts": ["a", "b", "c"]}, key=LIMITED["limited-http"])
    assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
    error = rpc_error(
        rpc.stub.BatchPredict,
        pb.BatchPredictRequest(texts=["a", "b", "c"]),
        metadata=[("x-api-key", LIMITED["limited-grpc"])],
    )
    assert (
        error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and int(dict(error.trailing_metadata())["retry-after"]) >= 1
    )
    assert refused(web, "RATE_LIMITED") == before + 2


def test_an_id_reused_with_another_payload_conflicts_on_every_transport(both):
    web, rpc = both
    before = refused(web, "IDEMPOTENCY_CONFLICT")
    assert http(web, "/v1/predict", {"text": "first", "request_id": "parity-http"}).ok
    assert http(web, "/v1/predict", {"text": "second", "request_id": "parity-http"}).status_code == 409
    key = [("x-api-key", API_KEY)]
    rpc.stub.Predict(pb.PredictRequest(text="first", request_id="parity-grpc"), metadata=key)
    error = rpc_error(rpc.stub.Predict, pb.PredictRequest(text="second", request_id="parity-grpc"), metadata=key)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert refused(web, "IDEMPOTENCY_CONFLICT") == before + 2


def test_overload_on_every_transport_with_its_retry_hint(both):
    """One request in flight per process (TOXISERVE_MAX_IN_FLIGHT=1): while a heavy batch holds the
    slot, the next request is refused at once on HTTP and on gRPC alike."""
    web, rpc = both
    before = refused(web, "OVERLOADED")
    key = [("x-api-key", API_KEY)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        http_heavy = pool.submit(http, web, "/v2/batch_predict", {"texts": HEAVY})
        grpc_heavy = pool.submit(rpc.stub.BatchPredict, pb.BatchPredictRequest(texts=HEAVY, version="v2"), metadata=key)
        time.sleep(0.5)  # both heavy batches hold their process's one slot
        shed = http(web, "/v1/predict", {"text": "x"})
        error = rpc_error(rpc.stub.Predict, pb.PredictRequest(text="x", version="v1"), metadata=key)
        assert not http_heavy.done() and not grpc_heavy.done()
        assert http_heavy.result().ok and grpc_heavy.result().model_version == "v2"
    assert shed.status_code == 503 and shed.json()["error_code"] == "OVERLOADED" and shed.headers["Retry-After"] == "1"
    assert error.code() == grpc.StatusCode.UNAVAILABLE and dict(error.trailing_metadata())["retry-after"] == "1"
    assert refused(web, "OVERLOADED") == before + 2


def test_oip_refusals_speak_each_protocol(both):
    web, rpc = both
    tensor = tritonclient_http.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(["x"], dtype=object))
    with tritonclient_http.InferenceServerClient(f"127.0.0.1:{web.port}") as triton:
        with pytest.raises(InferenceServerException) as rest:
            triton.infer("toxicity", [tensor], headers={"X-API-Key": "wrong"})
    grpc_tensor = tritonclient_grpc.InferInput("text", [1], "BYTES")
    grpc_tensor.set_data_from_numpy(np.array(["x"], dtype=object))
    triton = tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{rpc.port}")
    with pytest.raises(InferenceServerException) as over_grpc:
        triton.infer("toxicity", [grpc_tensor], headers={"x-api-key": "wrong"})
    triton.close()
    assert rest.value.status() == "401" and over_grpc.value.status() == "StatusCode.UNAUTHENTICATED"
