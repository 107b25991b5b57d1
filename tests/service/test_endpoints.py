import re

import numpy as np
import pytest

from service.core.schemas import BatchPredictResponseSchema, ModelsResponseSchema, PredictResponseSchema

from .conftest import AUTH, post

TEXTS = ["you are a complete idiot", "what a lovely morning", "@user check http://t.co/x", "RT lol &amp; stuff"]


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_lists_models(client, shipped_registry):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ready"
    for version in ("v1", "v2"):
        assert response.json["models"][version]["sha256"] == shipped_registry.manifest("toxicity", version)["sha256"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_predict_returns_the_artifacts_score_and_threshold_label(client, shipped_registry, reference_proba, version):
    model = shipped_registry.load("toxicity", version)
    expected = reference_proba(version, TEXTS)
    for index, (text, score) in enumerate(zip(TEXTS, expected, strict=True)):
        request_id = f"r-{version}-{index}"
        response = post(client, f"/{version}/predict", {"text": text, "request_id": request_id})
        assert response.status_code == 200
        body = response.json
        assert PredictResponseSchema().validate(body) == {}
        assert body["score"] == pytest.approx(score, abs=1e-12, rel=0)  # compiled scorer: exact to 1e-12
        assert body["label"] == ("toxic" if score >= model.threshold else "clean")
        assert body["model_version"] == version and body["request_id"] == request_id


def test_v2_uses_its_own_threshold(client, shipped_registry):
    v2 = shipped_registry.load("toxicity", "v2")
    assert v2.threshold != 0.5
    texts = [f"sample {i} {w}" for i, w in enumerate(["nice", "dumb", "hoe", "ok", "bitch", "good", "trash"] * 20)]
    scores = v2.score(texts)
    between = [t for t, s in zip(texts, scores, strict=True) if v2.threshold <= s < 0.5]
    assert between, "need a text scored between v2's threshold and 0.5"
    assert post(client, "/v2/predict", {"text": between[0]}).json["label"] == "toxic"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batch_predict_in_order_and_vectorised_scores(client, reference_proba, version):
    texts = TEXTS * 3
    response = post(client, f"/{version}/batch_predict", {"texts": texts, "request_id": f"batch-{version}"})
    assert response.status_code == 200
    body = response.json
    assert BatchPredictResponseSchema().validate(body) == {}
    assert body["model_version"] == version and body["request_id"] == f"batch-{version}"
    expected = reference_proba(version, texts)
    np.testing.assert_allclose([r["score"] for r in body["results"]], expected, atol=1e-12, rtol=0)


def test_batch_at_the_limit_is_accepted(client):
    response = post(client, "/v1/batch_predict", {"texts": ["fine text"] * 1000})
    assert response.status_code == 200 and len(response.json["results"]) == 1000


def test_request_id_sources(client):
    from_body = post(client, "/v1/predict", {"text": "hi there", "request_id": "body-id"}, {"X-Request-ID": "hdr-id"})
    # X-Request-ID correlates: echoed as it came, even when the body names the request
    assert from_body.json["request_id"] == "body-id" and from_body.headers["X-Request-ID"] == "hdr-id"
    keyed = post(client, "/v1/predict", {"text": "hi there"}, {"Idempotency-Key": "idem-id"})
    assert keyed.json["request_id"] == keyed.headers["X-Request-ID"] == "idem-id"
    from_header = post(client, "/v1/predict", {"text": "hi there"}, {"X-Request-ID": "hdr-id"})
    assert from_header.json["request_id"] == "hdr-id" and from_header.headers["X-Request-ID"] == "hdr-id"
    generated = post(client, "/v1/predict", {"text": "hi there"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.json["request_id"])
    assert generated.headers["X-Request-ID"] == generated.json["request_id"]
    assert client.get("/healthz", headers={"X-Request-ID": "probe-1"}).headers["X-Request-ID"] == "probe-1"


def test_models_endpoint_reports_manifests(client, shipped_registry):
    response = client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    assert ModelsResponseSchema().validate(response.json) == {}
    by_version = {m["version"]: m for m in response.json["models"]}
    for version, role in (("v1", "stable"), ("v2", "canary")):
        manifest = shipped_registry.manifest("toxicity", version)
        assert by_version[version]["sha256"] == manifest["sha256"]
        assert by_version[version]["threshold"] == manifest["threshold"]
        assert by_version[version]["metrics"] == manifest["metrics"]["test"]
        assert by_version[version]["role"] == role
    assert response.json["canary_percent"] == 10.0


def test_zero_width_characters_do_not_lower_a_score(client):
    plain = post(client, "/v1/predict", {"text": "fuck you"}).json["score"]
    hidden = post(client, "/v1/predict", {"text": "f\u200buck y\u200bou"}).json["score"]
    assert hidden == plain


def test_a_text_of_only_zero_width_characters_is_refused_as_blank(client):
    response = post(client, "/v1/predict", {"text": "\u200b\u200b\u200d"})
    assert response.status_code == 422 and response.json["details"] == {"text": ["blank"]}
