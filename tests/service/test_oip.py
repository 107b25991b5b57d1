"""Open Inference Protocol (KServe V2) REST endpoints, through the Flask test client."""

import pytest

from .conftest import AUTH, make_app, post

TEXTS = ["you are a complete idiot", "have a wonderful day"]


@pytest.fixture(scope="module")
def oip_client():
    return make_app().test_client()


def spec_request(texts, **extra):
    """Shaped as the spec's example: id, inputs with name/shape/datatype/data, outputs by name."""
    return {
        "id": "42",
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
        "outputs": [{"name": "score"}, {"name": "label"}],
        **extra,
    }


def test_health_and_server_metadata(oip_client):
    assert oip_client.get("/v2/health/live").json == {"live": True}
    ready = oip_client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json["ready"] is True
    server = oip_client.get("/v2").json
    assert server["name"] == "toxiserve" and server["extensions"] == ["binary_tensor_data"] and server["version"]


def test_model_metadata_schema(oip_client):
    body = oip_client.get("/v2/models/toxicity").json
    assert body == {
        "name": "toxicity",
        "versions": ["v1", "v2"],
        "platform": "scikit-learn",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "score", "datatype": "FP64", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            # v1 and v2 have no categories: zero columns, named by an empty list
            {"name": "categories", "datatype": "FP64", "shape": [-1, 0], "parameters": {"categories": ""}},
            {"name": "explanation", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    assert oip_client.get("/v2/models/toxicity/versions/v2").json["versions"] == ["v2"]
    assert oip_client.get("/v2/models/toxicity/ready").json == {"name": "toxicity", "ready": True}
    assert oip_client.get("/v2/models/toxicity/versions/v1/ready").json == {"name": "toxicity", "ready": True}


@pytest.mark.parametrize(
    "path", ["/v2/models/other", "/v2/models/toxicity/versions/v9", "/v2/models/toxicity/versions/v9/ready"]
)
def test_unknown_model_or_version_is_404_in_the_spec_shape(oip_client, path):
    response = oip_client.get(path)
    assert response.status_code == 404
    assert set(response.json) >= {"error", "error_code"} and response.json["error_code"] == "NOT_FOUND"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_infer_with_a_version_equals_batch_predict(oip_client, version):
    response = post(oip_client, f"/v2/models/toxicity/versions/{version}/infer", spec_request(TEXTS, id=f"o-{version}"))
    assert response.status_code == 200, response.json
    body = response.json
    assert body["model_name"] == "toxicity" and body["model_version"] == version and body["id"] == f"o-{version}"
    score, label = body["outputs"]
    expected = post(oip_client, f"/{version}/batch_predict", {"texts": TEXTS}).json["results"]
    assert score == {"name": "score", "datatype": "FP64", "shape": [2], "data": [r["score"] for r in expected]}
    assert label == {"name": "label", "datatype": "BYTES", "shape": [2], "data": [r["label"] for r in expected]}


def test_infer_without_version_goes_through_the_canary_router(oip_client):
    for i in range(30):
        request_id = f"oip-route-{i}"
        body = post(oip_client, "/v2/models/toxicity/infer", spec_request(["hello"], id=request_id)).json
        routed = post(oip_client, "/predict", {"text": "hello", "request_id": f"p-{request_id}"})
        direct = oip_client.application.extensions["toxiserve"].rollout.current.arm(request_id)[0]
        assert body["model_version"] == direct and routed.status_code == 200


def test_shape_n_by_1_and_selected_outputs(oip_client):
    request = {
        "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [[t] for t in TEXTS]}],
        "outputs": [{"name": "label"}],
    }
    body = post(oip_client, "/v2/models/toxicity/versions/v1/infer", request).json
    assert [o["name"] for o in body["outputs"]] == ["label"] and len(body["outputs"][0]["data"]) == 2


@pytest.mark.parametrize(
    "inputs, code",
    [
        ([{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}], "INVALID_PAYLOAD"),
        ([{"name": "other", "shape": [1], "datatype": "BYTES", "data": ["x"]}], "INVALID_PAYLOAD"),
        ([{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["x"]}], "INVALID_PAYLOAD"),
        ([{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}], "EMPTY_BATCH"),
        ([{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["  "]}], "UNPROCESSABLE"),
        ([{"name": "text", "shape": [1], "datatype": "BYTES"}], "INVALID_PAYLOAD"),
    ],
)
def test_bad_requests_in_the_spec_error_shape(oip_client, inputs, code):
    response = post(oip_client, "/v2/models/toxicity/infer", {"inputs": inputs})
    assert 400 <= response.status_code < 500
    assert response.json["error_code"] == code and isinstance(response.json["error"], str)
    assert "message" not in response.json


def test_infer_needs_a_key_but_metadata_does_not(oip_client):
    response = oip_client.post("/v2/models/toxicity/infer", json=spec_request(TEXTS))
    assert response.status_code == 401 and response.json["error_code"] == "UNAUTHORIZED" and response.json["error"]
    assert oip_client.get("/v2/models/toxicity").status_code == 200


def test_oip_id_is_echoed_and_idempotency_key_deduplicates(oip_client):
    first = post(oip_client, "/v2/models/toxicity/infer", spec_request(TEXTS, id="oip-id"))
    other = post(oip_client, "/v2/models/toxicity/infer", spec_request(["other"], id="oip-id"))
    assert first.status_code == other.status_code == 200 and first.json["id"] == other.json["id"] == "oip-id"
    assert "Idempotent-Replayed" not in other.headers
    keyed = {"Idempotency-Key": "oip-idem"}
    once = post(oip_client, "/v2/models/toxicity/infer", spec_request(TEXTS, id="a"), headers=keyed)
    again = post(oip_client, "/v2/models/toxicity/infer", spec_request(TEXTS, id="a"), headers=keyed)
    assert again.json == once.json and again.headers["Idempotent-Replayed"] == "true"
    conflict = post(oip_client, "/v2/models/toxicity/infer", spec_request(["other"]), headers=keyed)
    assert conflict.status_code == 409 and conflict.json["error_code"] == "IDEMPOTENCY_CONFLICT"


def test_existing_v2_routes_are_unchanged(oip_client):
    assert post(oip_client, "/v2/predict", {"text": "hi"}).json["model_version"] == "v2"
    assert oip_client.get("/v1/models", headers=AUTH).status_code == 200
