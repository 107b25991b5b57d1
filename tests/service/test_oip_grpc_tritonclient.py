"""The Open Inference Protocol over gRPC with tritonclient.grpc, the field's reference client, against
the real gRPC process: the same admission and answers as HTTP, through the data plane."""

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

tritonclient_grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient is in the dev extra")
from tritonclient.utils import InferenceServerException  # noqa: E402

from .conftest import API_KEY  # noqa: E402
from .test_grpc import GrpcProcess  # noqa: E402

pytestmark = pytest.mark.gunicorn

TEXTS = ["you are a complete idiot", "have a wonderful day", "f\u200buck this", "caf\u00e9 \U0001f600 nice"]
KEY = {"x-api-key": API_KEY}


@pytest.fixture(scope="module")
def server():
    running = GrpcProcess()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    triton = tritonclient_grpc.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield triton
    triton.close()


def text_input(texts):
    tensor = tritonclient_grpc.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object))
    return tensor


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_model_infer_scores_equal_predict_proba(client, shipped_registry, version, reference_proba):
    result = client.infer("toxicity", [text_input(TEXTS)], model_version=version, headers=KEY, request_id="")
    expected = reference_proba(version, TEXTS)
    assert np.max(np.abs(result.as_numpy("score") - expected)) <= 1e-12
    labels = [label.decode() for label in result.as_numpy("label")]
    threshold = 0.5 if version == "v1" else 0.36
    assert labels == ["toxic" if s >= threshold else "clean" for s in expected]
    assert result.get_response().model_version == version


def test_typed_contents_get_typed_contents_back(server, shipped_registry, reference_proba):
    """bytes_contents in (not raw): the answer comes in fp64_contents / bytes_contents."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    request = service_pb2.ModelInferRequest(model_name="toxicity", model_version="v2", id="typed-1")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(TEXTS)])
    tensor.contents.bytes_contents.extend(t.encode() for t in TEXTS)
    response = stub.ModelInfer(request, metadata=list(KEY.items()), timeout=10)
    scores = list(response.outputs[0].contents.fp64_contents)
    expected = reference_proba("v2", TEXTS)
    assert response.id == "typed-1" and not response.raw_output_contents
    assert np.max(np.abs(np.array(scores) - expected)) <= 1e-12


def test_router_metadata_and_health(client, server):
    result = client.infer("toxicity", [text_input(TEXTS)], headers=KEY)
    assert result.get_response().model_version in ("v1", "v2")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("toxicity", "v1")
    assert not client.is_model_ready("toxicity", "v9")
    assert "binary_tensor_data" in client.get_server_metadata().extensions
    metadata = client.get_model_metadata("toxicity")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("text", "BYTES", [-1])]
    assert server.health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


def test_reflection_lists_the_inference_service(server):
    database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    assert "inference.GRPCInferenceService" in set(database.get_services())


def test_refusals_as_status_codes(client):
    with pytest.raises(InferenceServerException) as refused:
        client.infer("toxicity", [text_input(TEXTS)], headers={"x-api-key": "wrong"})
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("toxicity", [text_input(TEXTS)], model_version="v9", headers=KEY)
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "v9" in unknown.value.message()
    with pytest.raises(InferenceServerException) as limited:
        for _ in range(2):  # 3/minute: the second batch of 4 texts is over
            client.infer("toxicity", [text_input(TEXTS[:2])], headers={"x-api-key": "limited-key-0000"})
    assert limited.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_idempotency_key_metadata_replays_and_the_id_is_only_echoed(client):
    keyed = {**KEY, "idempotency-key": "grpc-oip-once"}
    first = client.infer("toxicity", [text_input(TEXTS)], request_id="grpc-oip-1", headers=keyed)
    again = client.infer("toxicity", [text_input(TEXTS)], request_id="grpc-oip-1", headers=keyed)
    assert np.array_equal(first.as_numpy("score"), again.as_numpy("score"))
    with pytest.raises(InferenceServerException) as conflict:
        client.infer("toxicity", [text_input(TEXTS[:1])], request_id="grpc-oip-1", headers=keyed)
    assert conflict.value.status() == "StatusCode.ALREADY_EXISTS"
    other = client.infer("toxicity", [text_input(TEXTS[:1])], request_id="grpc-oip-1", headers=KEY)
    assert other.get_response().id == "grpc-oip-1" and other.as_numpy("score").shape == (1,)
