"""The Open Inference Protocol over REST as the field's reference client speaks it: tritonclient.http,
against a real gunicorn, in its default binary mode and with binary_data=False."""

import json
import struct

import numpy as np
import pytest
import requests

tritonclient_http = pytest.importorskip("tritonclient.http", reason="tritonclient is in the dev extra")
from tritonclient.utils import InferenceServerException  # noqa: E402

from .server import Server  # noqa: E402

pytestmark = pytest.mark.gunicorn

KEY = "k-triton-0001112222"
TEXTS = ["you are a complete idiot", "have a wonderful day", "f\u200buck this", "caf\u00e9 \U0001f600 nice"]


@pytest.fixture(scope="module")
def server():
    with Server({"TOXISERVE_API_KEYS": f"tests:{KEY}", "TOXISERVE_RATE_LIMIT": ""}) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with tritonclient_http.InferenceServerClient(url=f"127.0.0.1:{server.port}") as triton:
        yield triton


def text_input(texts, binary=True, shape=None):
    tensor = tritonclient_http.InferInput("text", shape or [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object).reshape(shape or [len(texts)]), binary_data=binary)
    return tensor


def expected(reference_proba, version, texts=TEXTS):
    return reference_proba(version, texts)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_default_binary_mode_scores_equal_predict_proba(client, reference_proba, version):
    result = client.infer("toxicity", [text_input(TEXTS)], model_version=version, headers={"X-API-Key": KEY})
    scores = result.as_numpy("score")
    assert scores.dtype == np.float64 and scores.shape == (len(TEXTS),)
    assert np.max(np.abs(scores - expected(reference_proba, version))) <= 1e-12
    threshold = 0.5 if version == "v1" else 0.36
    assert [label.decode() for label in result.as_numpy("label")] == [
        "toxic" if s >= threshold else "clean" for s in scores
    ]
    assert result.get_response()["model_version"] == version


def test_json_mode_with_binary_data_false(client, reference_proba):
    outputs = [tritonclient_http.InferRequestedOutput(name, binary_data=False) for name in ("score", "label")]
    result = client.infer(
        "toxicity", [text_input(TEXTS, binary=False)], model_version="v2", outputs=outputs, headers={"X-API-Key": KEY}
    )
    response = result.get_response()
    assert all("data" in output and "parameters" not in output for output in response["outputs"])
    assert np.max(np.abs(result.as_numpy("score") - expected(reference_proba, "v2"))) <= 1e-12


def test_one_output_binary_the_other_json(client, reference_proba):
    outputs = [
        tritonclient_http.InferRequestedOutput("score", binary_data=True),
        tritonclient_http.InferRequestedOutput("label", binary_data=False),
    ]
    result = client.infer(
        "toxicity", [text_input(TEXTS)], model_version="v1", outputs=outputs, headers={"X-API-Key": KEY}
    )
    by_name = {output["name"]: output for output in result.get_response()["outputs"]}
    assert "binary_data_size" in by_name["score"]["parameters"] and "data" in by_name["label"]
    assert np.max(np.abs(result.as_numpy("score") - expected(reference_proba, "v1"))) <= 1e-12


def test_shape_n_by_1_and_the_router(client, reference_proba):
    result = client.infer("toxicity", [text_input(TEXTS, shape=[len(TEXTS), 1])], headers={"X-API-Key": KEY})
    version = result.get_response()["model_version"]
    assert version in ("v1", "v2")
    assert np.max(np.abs(result.as_numpy("score") - expected(reference_proba, version))) <= 1e-12


def test_idempotency_key_replays_the_same_answer_and_the_id_is_only_echoed(client):
    keyed = {"X-API-Key": KEY, "Idempotency-Key": "triton-once"}
    first = client.infer("toxicity", [text_input(TEXTS)], request_id="triton-1", headers=keyed)
    again = client.infer("toxicity", [text_input(TEXTS)], request_id="triton-1", headers=keyed)
    assert first.get_response()["id"] == "triton-1"
    assert np.array_equal(first.as_numpy("score"), again.as_numpy("score"))
    assert first.get_response()["model_version"] == again.get_response()["model_version"]
    with pytest.raises(InferenceServerException) as conflict:
        client.infer("toxicity", [text_input(TEXTS[:1])], headers=keyed)
    assert conflict.value.status() == "409"
    # the same id with other texts: a correlation id, answered afresh
    other = client.infer("toxicity", [text_input(TEXTS[:1])], request_id="triton-1", headers={"X-API-Key": KEY})
    assert other.get_response()["id"] == "triton-1" and other.as_numpy("score").shape == (1,)


def test_metadata_health_and_refusals(client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("toxicity", "v2")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("toxicity")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    with pytest.raises(InferenceServerException) as refused:
        client.infer("toxicity", [text_input(TEXTS)], headers={"X-API-Key": "wrong"})
    assert refused.value.status() == "401" and "API key" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("toxicity", [text_input(TEXTS)], model_version="v9", headers={"X-API-Key": KEY})
    assert unknown.value.status() == "404" and "v9" in unknown.value.message()


def framed(header: dict, binary: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + binary, {"Inference-Header-Content-Length": str(len(head)), "X-API-Key": KEY}


def elements(*texts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


def binary_request(raw: bytes, size: int, count: int = 2) -> tuple[bytes, dict]:
    tensor = {"name": "text", "shape": [count], "datatype": "BYTES", "parameters": {"binary_data_size": size}}
    return framed({"inputs": [tensor]}, raw)


@pytest.mark.parametrize(
    ("body_and_headers", "message"),
    [
        (binary_request(elements(b"one", b"two")[:-1], 13), "element 1 declares 3 bytes; only 2 remain"),
        (binary_request(elements(b"one", b"two") + b"x", 15), "1 bytes after its 2 elements"),
        (binary_request(elements(b"one", b"two"), 99), "binary_data_size 99"),
        (binary_request(elements(b"one", b"\xff\xfe"), 13), "element 1 is not UTF-8"),
        (binary_request(elements(b"one"), 7, count=2), "ends inside the length of element 1"),
        ((b"{}", {"Inference-Header-Content-Length": "500", "X-API-Key": KEY}), "within the body"),
    ],
    ids=["truncated", "leftover", "wrong-size", "not-utf8", "too-few", "header-length-past-body"],
)
def test_malformed_binary_framing_is_a_clear_400(server, body_and_headers, message):
    body, headers = body_and_headers
    response = requests.post(f"{server.url}/v2/models/toxicity/infer", data=body, headers=headers, timeout=10)
    assert response.status_code == 400 and message in response.json()["error"], response.text


@pytest.mark.parametrize("content_type", ["application/octet-stream", "application/json", None])
def test_binary_bodies_with_any_accepted_content_type(server, shipped_registry, content_type, reference_proba):
    texts = ["you idiot", "have a lovely day"]
    body, headers = binary_request(elements(*(t.encode() for t in texts)), sum(4 + len(t) for t in texts))
    if content_type:
        headers["Content-Type"] = content_type
    response = requests.post(
        f"{server.url}/v2/models/toxicity/versions/v1/infer", data=body, headers=headers, timeout=10
    )
    assert response.status_code == 200, response.text
    scores = response.json()["outputs"][0]["data"]
    expected = reference_proba("v1", texts)
    assert np.max(np.abs(np.array(scores) - expected)) <= 1e-12
