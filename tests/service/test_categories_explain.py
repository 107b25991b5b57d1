"""Categories and explanations on every transport (#26): the JSON routes (Flask test client and a real
gunicorn), OIP over REST and gRPC with tritonclient, and toxiserve's gRPC, one contract for all."""

import json

import grpc
import numpy as np
import pytest
import requests

from service.grpc.gen import toxicity_pb2 as pb
from shared_features.text import normalize_texts

from .conftest import API_KEY, AUTH, isolated_store, make_app, post
from .server import Server
from .test_grpc import GrpcProcess

tritonclient_http = pytest.importorskip("tritonclient.http", reason="tritonclient is in the dev extra")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient is in the dev extra")

V3_STABLE = {"TOXISERVE_STABLE_VERSION": "v3", "TOXISERVE_CANARY_VERSION": "v2", "TOXISERVE_CANARY_PERCENT": "0"}


def v3_stable() -> dict[str, str]:
    """v3 stable in a store of its own: the session's shared store keeps whatever arms it was seeded with."""
    return {**V3_STABLE, "TOXISERVE_STORE_URL": isolated_store()}


TEXT = "Muslims are VERMIN, you 1d10t!"
TEXTS = [TEXT, "have a lovely day", "I would never say women are trash"]
PLAIN_KEYS = {"label", "score", "model_version", "request_id"}


@pytest.fixture(scope="module")
def v3():
    from shared_features import ModelRegistry

    return ModelRegistry().load("toxicity", "v3")


@pytest.fixture(scope="module")
def client():
    return make_app(STABLE_VERSION="v3", CANARY_VERSION="v2", CANARY_PERCENT=0.0).test_client()


def expected_categories(model, texts):
    rows = model.category_scores(normalize_texts(texts)).tolist()
    return [dict(zip(model.categories, row, strict=True)) for row in rows]


def check_explanation(explanation, text, model, k):
    assert explanation == model.explain(text, k)["explanation"]
    sizes = [abs(item["contribution"]) for item in explanation]
    assert sizes == sorted(sizes, reverse=True) and len(explanation) <= k
    for item in explanation:
        assert text[item["start"] : item["end"]] == item["text"]
        assert set(item["categories"]) == set(model.categories)


# --- JSON routes, Flask test client ---------------------------------------------------------------


def test_old_clients_get_exactly_todays_bodies(client):
    assert set(post(client, "/predict", {"text": TEXT}).json) == PLAIN_KEYS
    batch = post(client, "/v1/models/v3/batch_predict", {"texts": TEXTS}).json
    assert all(set(result) == {"label", "score"} for result in batch["results"])
    asked_nothing = post(client, "/predict", {"text": TEXT, "categories": False, "explain": False}).json
    assert set(asked_nothing) == PLAIN_KEYS


def test_categories_and_labels_follow_the_manifests_thresholds(client, v3):
    body = post(client, "/predict", {"text": TEXT, "categories": True}).json
    assert set(body) == PLAIN_KEYS | {"categories", "labels"}
    assert body["categories"] == pytest.approx(expected_categories(v3, [TEXT])[0], abs=1e-12)
    thresholds = {name: c["threshold"] for name, c in v3.manifest["categories"].items()}
    assert body["labels"] == [name for name, p in body["categories"].items() if p >= thresholds[name]]
    assert body["labels"] == ["hate", "offensive"] and body["label"] == "toxic"  # label keeps its meaning
    info = {m["version"]: m for m in client.get("/v1/models", headers=AUTH).json["models"]}
    assert info["v3"]["categories"] == v3.manifest["categories"] and info["v2"]["categories"] == {}


def test_a_client_can_check_an_explanation_adds_up(client):
    """Every contribution (a short text has fewer than 50 features) plus the published intercepts
    are the logits of the score and of each category."""
    import math

    def logit(p):
        return math.log(p) - math.log1p(-p)

    info = {m["version"]: m for m in client.get("/v1/models", headers=AUTH).json["models"]}["v3"]["intercepts"]
    body = post(client, "/predict", {"text": TEXT, "explain": 50, "categories": True}).json
    total = info["score"] + sum(item["contribution"] for item in body["explanation"])
    assert abs(total - logit(body["score"])) <= 1e-9
    for name, p in body["categories"].items():
        total = info["categories"][name] + sum(item["categories"][name] for item in body["explanation"])
        assert abs(total - logit(p)) <= 1e-9


def test_explain_true_gives_the_top_five_with_spans_in_the_text_sent(client, v3):
    body = post(client, "/predict", {"text": TEXT, "explain": True}).json
    assert set(body) == PLAIN_KEYS | {"explanation"}
    check_explanation(body["explanation"], TEXT, v3, 5)
    assert body["explanation"][0]["text"] == "Muslims are"
    assert {"1d10t", "are VERMIN"} <= {item["text"] for item in body["explanation"]}


def test_a_batch_explains_every_text_and_keeps_per_item_errors(client, v3):
    texts = [*TEXTS, "   "]
    body = post(
        client,
        "/v1/models/v3/batch_predict",
        {"texts": texts, "explain": 2, "categories": True, "on_error": "item"},
    ).json
    results = body["results"]
    assert results[3] == {"error_code": "UNPROCESSABLE", "message": "text is blank"}
    for text, result, categories in zip(TEXTS, results, expected_categories(v3, TEXTS), strict=False):
        check_explanation(result["explanation"], text, v3, 2)
        assert result["categories"] == pytest.approx(categories, abs=1e-12)


def test_a_model_without_categories_says_so_and_still_explains(client):
    from shared_features import ModelRegistry

    v2 = ModelRegistry().load("toxicity", "v2")
    body = post(client, "/v2/predict", {"text": "you idiot", "categories": True, "explain": 3}).json
    assert body["categories"] == {} and body["labels"] == []
    check_explanation(body["explanation"], "you idiot", v2, 3)  # character n-grams point at letters


@pytest.mark.parametrize(
    "extra",
    [{"explain": 51}, {"explain": -1}, {"explain": 2.5}, {"explain": "3"}, {"categories": 1}, {"categories": "yes"}],
)
def test_bad_options_are_400_with_a_clear_code(client, extra):
    response = post(client, "/predict", {"text": TEXT, **extra})
    assert response.status_code == 400 and response.json["error_code"] == "INVALID_PAYLOAD"
    assert set(response.json["details"]) <= {"explain", "categories"}


def test_idempotency_tells_a_detailed_request_from_a_plain_one(client):
    first = post(client, "/predict", {"text": TEXT, "explain": 2, "request_id": "explained-1"})
    again = post(client, "/predict", {"text": TEXT, "explain": 2, "request_id": "explained-1"})
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    other = post(client, "/predict", {"text": TEXT, "request_id": "explained-1"})
    assert other.status_code == 409 and other.json["error_code"] == "IDEMPOTENCY_CONFLICT"


def test_the_explanation_of_a_long_hostile_text_stays_bounded(client, v3):
    text = ("i d i o t " * 60 + "\u1100\u1161 &amp;" * 50)[:2000]
    body = post(client, "/predict", {"text": text, "explain": 50, "categories": True}).json
    assert len(body["explanation"]) <= 50
    for item in body["explanation"]:
        assert text[item["start"] : item["end"]] == item["text"]


# --- a real gunicorn: JSON routes and OIP REST with tritonclient.http -------------------------------


@pytest.fixture(scope="module")
def gunicorn():
    with Server({"TOXISERVE_API_KEYS": f"tests:{API_KEY}", "TOXISERVE_RATE_LIMIT": "", **v3_stable()}) as running:
        yield running


@pytest.mark.gunicorn
def test_gunicorn_answers_an_explained_request(gunicorn, v3):
    body = requests.post(
        f"{gunicorn.url}/predict", json={"text": TEXT, "explain": 3, "categories": True}, headers=AUTH, timeout=10
    ).json()
    assert body["model_version"] == "v3"
    check_explanation(body["explanation"], TEXT, v3, 3)
    plain = requests.post(f"{gunicorn.url}/predict", json={"text": TEXT}, headers=AUTH, timeout=10).json()
    assert set(plain) == PLAIN_KEYS and plain["score"] == body["score"]


@pytest.mark.gunicorn
def test_the_python_client_asks_for_categories_and_explanations(gunicorn, v3):
    from toxiserve.client import ToxiserveClient

    client = ToxiserveClient(gunicorn.url, api_key=API_KEY)
    body = client.predict(TEXT, categories=True, explain=2)
    assert body["labels"] == ["hate", "offensive"]
    check_explanation(body["explanation"], TEXT, v3, 2)
    assert set(client.predict(TEXT)) == PLAIN_KEYS
    batch = client.batch_predict(TEXTS, version="v3", explain=1)
    for text, result in zip(TEXTS, batch["results"], strict=True):
        check_explanation(result["explanation"], text, v3, 1)


@pytest.mark.gunicorn
def test_explaining_a_huge_batch_stops_at_the_deadline_and_the_worker_serves_on():
    """1,000 texts of 2,000 characters, 50 contributions each: far more than the deadline allows."""
    env = {"TOXISERVE_API_KEYS": f"tests:{API_KEY}", "TOXISERVE_RATE_LIMIT": "", "TOXISERVE_REQUEST_DEADLINE": "0.2"}
    words = "you idiot muslims are vermin i d i o t 1d10t \u201cquoted\u201d &amp; caf\u00e9 "
    texts = [(f"{i} " + words * 40)[:2000] for i in range(1000)]
    with Server({**env, **v3_stable()}, workers=1) as running:
        url = f"{running.url}/v1/models/v3/batch_predict"
        refused = requests.post(url, json={"texts": texts, "explain": 50}, headers=AUTH, timeout=60)
        assert refused.status_code == 503 and refused.json()["error_code"] == "DEADLINE_EXCEEDED"
        answer = requests.post(url, json={"texts": texts[:2], "explain": 50}, headers=AUTH, timeout=10)
        assert answer.status_code == 200 and 0 < len(answer.json()["results"][0]["explanation"]) <= 50


def http_input(texts, binary=True):
    tensor = tritonclient_http.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    return tensor


@pytest.mark.gunicorn
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_reads_categories_and_explanations(gunicorn, v3, binary):
    with tritonclient_http.InferenceServerClient(url=f"127.0.0.1:{gunicorn.port}") as triton:
        metadata = triton.get_model_metadata("toxicity", "v3")
        categories_meta = next(o for o in metadata["outputs"] if o["name"] == "categories")
        assert categories_meta["shape"] == [-1, 2] and categories_meta["parameters"]["categories"] == "hate,offensive"
        outputs = [
            tritonclient_http.InferRequestedOutput(name, binary_data=binary)
            for name in ("score", "categories", "explanation")
        ]
        result = triton.infer(
            "toxicity", [http_input(TEXTS, binary)], model_version="v3", outputs=outputs, headers={"X-API-Key": API_KEY}
        )
    table = result.as_numpy("categories")
    assert table.shape == (len(TEXTS), 2) and table.dtype == np.float64
    expected = np.array([[row[name] for name in v3.categories] for row in expected_categories(v3, TEXTS)])
    assert np.abs(table - expected).max() <= 1e-12
    tensor = result.get_output("categories")
    assert tensor["parameters"]["categories"] == "hate,offensive"
    for text, blob in zip(TEXTS, result.as_numpy("explanation"), strict=True):
        check_explanation(json.loads(blob), text, v3, 5)
    assert result.as_numpy("label") is None  # not asked for


@pytest.mark.gunicorn
def test_oip_rest_top_k_and_its_bounds(gunicorn, v3):
    url = f"{gunicorn.url}/v2/models/toxicity/versions/v3/infer"
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXT]}],
        "outputs": [{"name": "explanation", "parameters": {"top_k": 2}}],
    }
    answer = requests.post(url, json=body, headers=AUTH, timeout=10).json()
    (tensor,) = answer["outputs"]
    check_explanation(json.loads(tensor["data"][0]), TEXT, v3, 2)
    body["outputs"][0]["parameters"]["top_k"] = 0
    refused = requests.post(url, json=body, headers=AUTH, timeout=10)
    assert refused.status_code == 400 and "top_k" in refused.json()["error"]


# --- the gRPC process: toxiserve's Toxicity and OIP with tritonclient.grpc -------------------------


@pytest.fixture(scope="module")
def grpc_server():
    running = GrpcProcess(v3_stable())
    yield running
    running.stop()


@pytest.mark.gunicorn
def test_toxiserve_grpc_predict_and_batch_carry_the_new_fields(grpc_server, v3):
    key = [("x-api-key", API_KEY)]
    answer = grpc_server.stub.Predict(pb.PredictRequest(text=TEXT, categories=True, explain=3), metadata=key)
    assert dict(answer.categories) == pytest.approx(expected_categories(v3, [TEXT])[0], abs=1e-12)
    assert list(answer.labels) == ["hate", "offensive"]
    explanation = [
        {
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "feature": c.feature,
            "contribution": c.contribution,
            "categories": dict(c.categories),
        }
        for c in answer.explanation
    ]
    check_explanation(explanation, TEXT, v3, 3)
    plain = grpc_server.stub.Predict(pb.PredictRequest(text=TEXT), metadata=key)
    assert not plain.categories and not plain.explanation and plain.score == answer.score
    batch = grpc_server.stub.BatchPredict(pb.BatchPredictRequest(texts=TEXTS, version="v3", explain=1), metadata=key)
    assert [len(r.explanation) for r in batch.results] == [1, 1, 1]
    with pytest.raises(grpc.RpcError) as refused:
        grpc_server.stub.Predict(pb.PredictRequest(text=TEXT, explain=51), metadata=key)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.gunicorn
def test_tritonclient_grpc_reads_categories_and_explanations(grpc_server, v3):
    triton = tritonclient_grpc.InferenceServerClient(url=f"127.0.0.1:{grpc_server.port}")
    try:
        tensor = tritonclient_grpc.InferInput("text", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(np.array(TEXTS, dtype=object))
        outputs = [tritonclient_grpc.InferRequestedOutput(name) for name in ("categories", "explanation")]
        result = triton.infer(
            "toxicity", [tensor], model_version="v3", outputs=outputs, headers={"x-api-key": API_KEY}, request_id=""
        )
        metadata = triton.get_model_metadata("toxicity", "v3")
    finally:
        triton.close()
    table = result.as_numpy("categories")
    expected = np.array([[row[name] for name in v3.categories] for row in expected_categories(v3, TEXTS)])
    assert table.shape == (3, 2) and np.abs(table - expected).max() <= 1e-12
    output = next(o for o in result.get_response().outputs if o.name == "categories")
    assert output.parameters["categories"].string_param == "hate,offensive"
    for text, blob in zip(TEXTS, result.as_numpy("explanation"), strict=True):
        check_explanation(json.loads(blob), text, v3, 5)
    assert [list(o.shape) for o in metadata.outputs if o.name == "categories"] == [[-1, 2]]
