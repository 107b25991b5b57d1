"""Drift: shifted inputs push the PSI over its threshold; in-distribution inputs don't; file == service."""

import json
import random

import pandas as pd
import pytest

from batchjob.cli import cli
from service.observability import metrics
from tests.conftest import SHIPPED_MODELS

from .conftest import AUTH, make_app, post
from .test_metrics import scrape, value


@pytest.fixture(autouse=True)
def fresh_drift_counts():
    """Without gunicorn, every app in this process shares one counter: start each test from zero."""
    metrics.DRIFT_OBSERVATIONS.clear()


def gibberish(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("qwzxjkv ") for _ in range(rng.randint(300, 1500))) for _ in range(n)]


def drift_of(client, version="v1"):
    response = client.get(f"/v1/models/{version}/drift", headers=AUTH)
    assert response.status_code == 200
    return response.json


def test_shifted_inputs_cross_the_threshold():
    client = make_app().test_client()
    first = drift_of(client)
    assert first["available"] and first["samples"] == 0
    assert all(f["psi"] is None and not f["drifted"] for f in first["features"].values())
    texts = gibberish(150)
    for start in range(0, 150, 50):
        assert post(client, "/v1/batch_predict", {"texts": texts[start : start + 50]}).status_code == 200
    report = drift_of(client)
    assert report["samples"] == 150 and report["drifted"]
    assert report["features"]["text_length"]["psi"] > report["threshold"]
    assert report["features"]["oov_rate"]["psi"] > report["threshold"]
    assert sum(report["features"]["score"]["counts"]) == 150
    metrics = scrape(client)
    assert (
        value(metrics, "drift_psi", model_version="v1", feature="text_length")
        == report["features"]["text_length"]["psi"]
    )
    assert drift_of(client, "v2")["samples"] == 0  # per model version


def test_in_distribution_inputs_do_not_drift(shared_data):
    client = make_app().test_client()
    texts = pd.read_csv(shared_data)["text"].sample(600, random_state=3).tolist()
    for start in range(0, 600, 200):
        post(client, "/v2/batch_predict", {"texts": [t for t in texts[start : start + 200] if len(t) <= 2000]})
    report = drift_of(client, "v2")
    assert report["samples"] >= 590 and not report["drifted"], {k: v["psi"] for k, v in report["features"].items()}


def test_batchjob_drift_gives_the_service_report(runner, tmp_path):
    texts = gibberish(120, seed=5) + ["have a nice day"] * 30
    source = tmp_path / "shifted.csv"
    pd.DataFrame({"text": texts}).to_csv(source, index=False)
    result = runner.invoke(cli, ["--model-dir", str(SHIPPED_MODELS), "drift", str(source), "--fail-on-drift"])
    assert result.exit_code == 4, result.output
    from_file = json.loads(result.output)
    client = make_app().test_client()
    post(client, "/v1/batch_predict", {"texts": texts})
    from_service = drift_of(client)
    for feature, result in from_service["features"].items():
        assert from_file["features"][feature]["counts"] == result["counts"]
        assert from_file["features"][feature]["psi"] == result["psi"]
    assert from_file["drifted"] and from_file["rows_in"] == 150


def test_unknown_version_is_404():
    client = make_app().test_client()
    response = client.get("/v1/models/v9/drift", headers=AUTH)
    assert response.status_code == 404 and response.json["error_code"] == "NOT_FOUND"


def test_one_psi_formula_for_drift_and_the_rollout_guardrail():
    """It was two (5.26 and 8.28 on the same histograms): the report, the guardrail and the
    exported reference shares now agree."""
    from service.rollout import guardrails
    from shared_features.drift import reference_counts, smoothed_shares

    client = make_app().test_client()
    post(client, "/v1/batch_predict", {"texts": gibberish(150, seed=2)})
    report = drift_of(client)
    profile = client.application.extensions["toxiserve"].inference.model("v1").manifest["reference_profile"]
    for feature, result in report["features"].items():
        reference = reference_counts(profile, feature)
        assert result["psi"] == pytest.approx(guardrails.psi(result["counts"], reference), abs=1e-6)
    scraped = scrape(client)
    # the training shares the recording rule compares with, smoothed as psi() smooths them
    expected = smoothed_shares(reference_counts(profile, "score"))
    labels = {"model_version": "v1", "feature": "score"}
    shares = [value(scraped, "drift_reference_share", **labels, bin=str(i)) for i in range(len(expected))]
    assert shares == pytest.approx(expected.tolist(), abs=1e-12)
    assert value(scraped, "drift_psi_threshold") == report["threshold"]
