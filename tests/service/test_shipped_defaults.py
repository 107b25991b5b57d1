"""The shipped defaults as a new user gets them: v3 stable, v2 loaded as a canary at 0 %, v1 not loaded.

The other service tests name their arms (v1 stable, v2 canary at 10 %: tests/conftest.py); these
clear that, so they see exactly what `TOXISERVE_*`-less configuration gives.
"""

import numpy as np
import pytest
import requests

from tests.conftest import PINNED_ARMS

from .conftest import API_KEY, AUTH, make_app, post
from .server import Server

TEXTS = ["have a lovely day", "I am a proud gay man", "you stupid worthless piece of trash", "my neighbours are Muslim"]


@pytest.fixture
def shipped_defaults(monkeypatch):
    for name in PINNED_ARMS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def default_client(shipped_defaults):
    return make_app().test_client()


def test_the_router_serves_v3_exactly_as_the_training_pipeline(default_client, reference_proba):
    expected = reference_proba("v3", TEXTS)
    for text, score in zip(TEXTS, expected, strict=True):
        body = post(default_client, "/predict", {"text": text}).json
        assert body["model_version"] == "v3"
        assert abs(body["score"] - score) <= 1e-12
    labels = [post(default_client, "/predict", {"text": t}).json["label"] for t in TEXTS]
    assert labels == ["clean", "clean", "toxic", "clean"]


def test_v2_is_loaded_for_comparison_and_gets_no_routed_traffic(default_client):
    roles = {m["version"]: m["role"] for m in default_client.get("/v1/models", headers=AUTH).json["models"]}
    assert roles == {"v3": "stable", "v2": "canary"}
    assert post(default_client, "/v2/predict", {"text": "hi"}).json["model_version"] == "v2"
    routed = {
        post(default_client, "/predict", {"text": "hi", "request_id": f"r-{i}"}).json["model_version"]
        for i in range(200)
    }
    assert routed == {"v3"}


def test_v1_is_not_loaded_and_the_answer_says_how_to_load_it(default_client):
    response = post(default_client, "/v1/predict", {"text": "hi"})
    assert response.status_code == 404 and response.json["error_code"]
    assert "not loaded" in response.json["message"]


@pytest.mark.gunicorn
def test_gunicorn_on_the_shipped_defaults_serves_v3(shipped_defaults, tmp_path, reference_proba):
    env = {"TOXISERVE_API_KEYS": f"t:{API_KEY}", "TOXISERVE_STORE_URL": f"sqlite:///{tmp_path}/s.sqlite3"}
    with Server(env) as server:
        answers = [
            requests.post(f"{server.url}/predict", json={"text": t}, headers=AUTH, timeout=10).json() for t in TEXTS
        ]
    assert {a["model_version"] for a in answers} == {"v3"}
    assert np.abs(np.array([a["score"] for a in answers]) - reference_proba("v3", TEXTS)).max() <= 1e-12


def test_the_readme_quick_start_shows_what_the_shipped_models_answer(default_client):
    """Every score the quick start prints is the real one (Flask's JSON is Python's float repr)."""
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    routed = [post(default_client, "/predict", {"text": t}).json for t in TEXTS[:1] + TEXTS[2:3]]
    batch = post(
        default_client, "/v2/batch_predict", {"texts": ["you idiot", "nice work", "I am a proud gay man"]}
    ).json
    shown = [f'"label":"{a["label"]}","model_version":"v3"' for a in routed]
    shown += [f'"score":{a["score"]!r}' for a in routed]
    shown += [f'{{"label":"{r["label"]}","score":{r["score"]!r}}}' for r in batch["results"]]
    for fragment in shown:
        assert fragment in readme, fragment


@pytest.mark.gunicorn
def test_tritonclient_http_and_grpc_reach_v3_by_name_and_by_the_router(shipped_defaults, tmp_path, reference_proba):
    """The Open Inference Protocol's reference client on the shipped defaults, both transports."""
    triton_http = pytest.importorskip("tritonclient.http", reason="tritonclient is in the dev extra")
    triton_grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient is in the dev extra")
    from .test_grpc import GrpcProcess

    expected = reference_proba("v3", TEXTS)

    def tensor(module):
        text = module.InferInput("text", [len(TEXTS)], "BYTES")
        text.set_data_from_numpy(np.array(TEXTS, dtype=object))
        return [text]

    env = {"TOXISERVE_API_KEYS": f"t:{API_KEY}", "TOXISERVE_STORE_URL": f"sqlite:///{tmp_path}/s.sqlite3"}
    with Server(env) as server, triton_http.InferenceServerClient(url=f"127.0.0.1:{server.port}") as client:
        # tritonclient adds its own headers to the dict it is given: a copy each call, never the shared AUTH
        assert client.is_model_ready("toxicity", "v3", headers=dict(AUTH))
        for version in ("v3", ""):  # by name, and through the router (stable: v3)
            result = client.infer("toxicity", tensor(triton_http), model_version=version, headers=dict(AUTH))
            assert result.get_response()["model_version"] == "v3"
            assert np.abs(result.as_numpy("score") - expected).max() <= 1e-12
    grpc_process = GrpcProcess()
    try:
        client = triton_grpc.InferenceServerClient(url=f"127.0.0.1:{grpc_process.port}")
        for version in ("v3", ""):
            result = client.infer(
                "toxicity", tensor(triton_grpc), model_version=version, headers={"x-api-key": API_KEY}
            )
            assert result.get_response().model_version == "v3"
            assert np.abs(result.as_numpy("score") - expected).max() <= 1e-12
        client.close()
    finally:
        grpc_process.stop()
