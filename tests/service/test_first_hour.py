"""What a new user meets in the first hour: a route for every version, per-item batch results, a
feedback file with a bad row in it, honest small-sample statistics, tools that read TOXISERVE_URL."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from batchjob.cli import cli as batchjob_cli
from tests.conftest import SHIPPED_MODELS
from toxiserve.cli import cli as toxiserve_cli
from toxiserve.client import ToxiserveClient

from .conftest import API_KEY, AUTH, make_app, post
from .server import BIN, Server

SHIPPED_ARMS = {"STABLE_VERSION": "v3", "CANARY_VERSION": "v2", "CANARY_PERCENT": 0}
UNUSABLE = ["  \u00a0\u200b", "x" * 2001]  # blank (only invisible characters), over 2,000 characters


@pytest.fixture(scope="module")
def shipped():
    """The shipped defaults' arms: v3 stable, v2 a canary at 0 %; v1 not loaded."""
    return make_app(**SHIPPED_ARMS).test_client()


# --- a route for every version ---


def test_any_named_version_has_the_fixed_routes_contract(shipped, reference_proba):
    texts = ["you stupid idiot", "have a lovely day"]
    for version in ("v3", "v2"):
        one = post(shipped, f"/v1/models/{version}/predict", {"text": texts[0], "request_id": f"any-{version}"})
        assert one.status_code == 200 and set(one.json) == {"label", "score", "model_version", "request_id"}
        assert one.json["model_version"] == version and one.json["request_id"] == f"any-{version}"
        batch = post(shipped, f"/v1/models/{version}/batch_predict", {"texts": texts})
        assert batch.status_code == 200 and batch.json["model_version"] == version
        scores = [result["score"] for result in batch.json["results"]]
        assert np.abs(np.array(scores) - reference_proba(version, texts)).max() <= 1e-12
    # the legacy fixed route and the new one answer v2 alike
    legacy = post(shipped, "/v2/predict", {"text": texts[1]}).json
    assert legacy["score"] == post(shipped, "/v1/models/v2/predict", {"text": texts[1]}).json["score"]


def test_a_version_the_rollout_does_not_name_is_404_naming_the_loaded_ones(shipped):
    for path in ("/v1/models/v1/predict", "/v1/models/v7/batch_predict"):
        answer = post(shipped, path, {"text": "x", "texts": ["x"]} if "batch" in path else {"text": "x"})
        assert answer.status_code in (400, 404)
    missing = post(shipped, "/v1/models/v1/predict", {"text": "x"})
    assert missing.status_code == 404 and missing.json["error_code"] == "NOT_FOUND"
    assert "v3" in missing.json["message"] and "v2" in missing.json["message"]
    assert post(shipped, "/v1/models/v3/predict", {"text": "x"}, headers={"X-API-Key": "nope"}).status_code == 401


# --- per-item results ---


def test_on_error_item_answers_each_unusable_text_in_its_place(shipped):
    texts = ["you idiot", *UNUSABLE, "nice work"]
    whole = post(shipped, "/v1/models/v3/batch_predict", {"texts": texts})
    assert whole.status_code == 422 and whole.json["error_code"] == "UNPROCESSABLE"  # the default, as before
    answer = post(shipped, "/v1/models/v3/batch_predict", {"texts": texts, "on_error": "item"})
    assert answer.status_code == 200, answer.json
    first, blank, too_long, last = answer.json["results"]
    assert set(first) == {"label", "score"} and set(last) == {"label", "score"}
    assert blank == {"error_code": "UNPROCESSABLE", "message": "text is blank"}
    assert too_long["error_code"] == "UNPROCESSABLE" and "2000" in too_long["message"]
    alone = post(shipped, "/v1/models/v3/batch_predict", {"texts": ["you idiot", "nice work"]}).json["results"]
    assert [first, last] == alone  # the scorable texts score as they would without the others
    everything_unusable = post(shipped, "/v3/batch_predict", {"texts": UNUSABLE, "on_error": "item"})
    assert everything_unusable.status_code == 404  # /v3/... is not a route: /v1/models/v3/... is
    only_unusable = post(shipped, "/v1/models/v3/batch_predict", {"texts": UNUSABLE, "on_error": "item"})
    assert only_unusable.status_code == 200 and all("error_code" in r for r in only_unusable.json["results"])


def test_on_error_is_part_of_the_request_an_idempotency_key_names(shipped):
    texts = ["you idiot", UNUSABLE[0]]
    first = post(shipped, "/v1/models/v3/batch_predict", {"texts": texts, "on_error": "item", "request_id": "oe-1"})
    again = post(shipped, "/v1/models/v3/batch_predict", {"texts": texts, "on_error": "item", "request_id": "oe-1"})
    assert first.status_code == again.status_code == 200 and first.json == again.json
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = post(shipped, "/v1/models/v3/batch_predict", {"texts": texts, "request_id": "oe-1"})
    assert other.status_code == 409 and other.json["error_code"] == "IDEMPOTENCY_CONFLICT"


@pytest.mark.parametrize("on_error", ["items", "", 1, None])
def test_an_unknown_on_error_is_a_clear_400(shipped, on_error):
    answer = post(shipped, "/v1/models/v3/batch_predict", {"texts": ["x"], "on_error": on_error})
    assert answer.status_code == 400 and answer.json["error_code"] == "INVALID_PAYLOAD"
    assert "on_error" in answer.json["details"]


# --- honest small samples ---


def test_one_label_gives_no_interval_but_says_insufficient():
    client = make_app(**SHIPPED_ARMS).test_client()
    post(client, "/predict", {"text": "you idiot", "request_id": "q-1"})
    assert post(client, "/v1/feedback", {"request_id": "q-1", "label": "toxic"}).status_code == 202
    quality = client.get("/v1/models/v3/quality", headers=AUTH).json["all_time"]
    assert quality["labels"] == 1 and quality["confusion_axes"] == ["predicted", "actual"]
    toxic = quality["classes"]["toxic"]
    assert toxic["f1"] == {"value": 1.0, "interval": None, "insufficient": True}
    assert toxic["precision"]["interval"] is None and toxic["precision"]["insufficient"] is True
    assert quality["macro_f1"]["insufficient"] is True
    assert quality["confusion"]["toxic"]["toxic"] == 1  # confusion[predicted][actual]


def test_drift_on_a_small_sample_says_insufficient_and_exits_5(tmp_path):
    source = tmp_path / "few.csv"
    pd.DataFrame({"text": [f"hello number {i}" for i in range(15)]}).to_csv(source, index=False)
    args = ["--model-dir", str(SHIPPED_MODELS), "drift", str(source), "--model-version", "v3"]
    runner = CliRunner()
    plain = runner.invoke(batchjob_cli, args)
    assert plain.exit_code == 0 and json.loads(plain.stdout)["status"] == "insufficient"
    assert "too small" in plain.stderr
    gated = runner.invoke(batchjob_cli, [*args, "--fail-on-drift"])
    assert gated.exit_code == 5 and json.loads(gated.stdout)["drifted"] is False
    from batchjob.cli import EXIT_DRIFTED, EXIT_INSUFFICIENT

    assert EXIT_INSUFFICIENT not in (0, 1, 2, 3, EXIT_DRIFTED)
    process = subprocess.run(
        [str(BIN / "batchjob"), *args, "--fail-on-drift"], capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 5 and json.loads(process.stdout)["status"] == "insufficient"


# --- batch scoring of an input that already has the output's columns ---


def test_output_prefix_scores_an_input_with_label_and_score_columns(tmp_path):
    source = tmp_path / "labelled.csv"
    pd.DataFrame({"text": ["you idiot", "nice work", " "], "label": [1, 0, 0], "score": [9, 9, 9]}).to_csv(
        source, index=False
    )
    base = ["--model-dir", str(SHIPPED_MODELS), "score", str(source), "--model-version", "v3"]
    runner = CliRunner()
    refused = runner.invoke(batchjob_cli, [*base, "--output", str(tmp_path / "a.csv")])
    assert refused.exit_code == 1 and "--output-prefix" in refused.output
    scored = runner.invoke(batchjob_cli, [*base, "--output", str(tmp_path / "b.csv"), "--output-prefix", "pred_"])
    assert scored.exit_code == 0, scored.output
    out = pd.read_csv(tmp_path / "b.csv")
    assert list(out.columns) == [
        "label",
        "score",
        "pred_score",
        "pred_label",
        "pred_model_version",
        "pred_score_hate",  # v3's categories (#26)
        "pred_score_offensive",
    ]
    assert list(out["label"]) == [1, 0] and list(out["pred_label"]) == ["toxic", "clean"]
    rejects = pd.read_csv(tmp_path / "b.rejects.csv")
    assert list(rejects.columns) == ["pred_row_number", "pred_reason", "label", "score"]
    process = subprocess.run(
        [str(BIN / "batchjob"), *base, "--output", str(tmp_path / "c.parquet"), "--output-prefix", "p_"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert list(pd.read_parquet(tmp_path / "c.parquet").columns) == [
        "label",
        "score",
        "p_score",
        "p_label",
        "p_model_version",
        "p_score_hate",
        "p_score_offensive",
    ]


# --- tools read TOXISERVE_URL ---


def test_the_client_reads_toxiserve_url_and_key(monkeypatch):
    monkeypatch.setenv("TOXISERVE_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("TOXISERVE_API_KEY", "from-the-environment")
    client = ToxiserveClient()
    assert client.base_url == "http://127.0.0.1:1" and client.api_key == "from-the-environment"
    monkeypatch.delenv("TOXISERVE_API_KEY")
    with pytest.raises(ValueError, match="TOXISERVE_API_KEY"):
        ToxiserveClient()


# --- on a real gunicorn: the routes, per-item results and a feedback file with bad rows ---


@pytest.mark.gunicorn
def test_on_gunicorn_every_version_route_per_item_results_and_feedback_rows(tmp_path):
    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_STABLE_VERSION": "v3",
        "TOXISERVE_CANARY_VERSION": "v2",
        "TOXISERVE_CANARY_PERCENT": "0",
        "TOXISERVE_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
    }
    with Server(env) as server, requests.Session() as session:
        session.headers.update(AUTH)
        one = session.post(f"{server.url}/v1/models/v3/predict", json={"text": "you idiot", "request_id": "fb-1"})
        assert one.status_code == 200 and one.json()["model_version"] == "v3"
        items = session.post(
            f"{server.url}/v1/models/v2/batch_predict", json={"texts": ["ok", UNUSABLE[0]], "on_error": "item"}
        )
        assert items.status_code == 200 and items.json()["results"][1]["error_code"] == "UNPROCESSABLE"
        for request_id in ("fb-2", "fb-3"):
            session.post(f"{server.url}/predict", json={"text": "nice work", "request_id": request_id})
        labels = tmp_path / "labels.csv"
        labels.write_text("request_id,label\nfb-1,toxic\nfb-2,spam\nfb-3,clean\nnever-seen,toxic\n")
        environment = {**os.environ, "TOXISERVE_URL": server.url, "TOXISERVE_API_KEY": API_KEY}
        process = subprocess.run(
            [str(BIN / "toxiserve"), "feedback", str(labels)], capture_output=True, text=True, env=environment
        )
        assert process.returncode == 1
        assert process.stdout.strip() == "2 of 4 labels accepted"
        refusals = process.stderr.strip().splitlines()
        assert refusals[0].startswith("line 3: fb-2: INVALID_PAYLOAD") and "label" in refusals[0]
        assert refusals[1].startswith("line 5: never-seen: UNKNOWN_REQUEST")
        # the same file again through click's runner: the two good rows are now conflicts, one line each
        result = CliRunner(env={"TOXISERVE_URL": server.url, "TOXISERVE_API_KEY": API_KEY}).invoke(
            toxiserve_cli, ["feedback", str(labels)]
        )
        assert result.exit_code == 1 and "0 of 4 labels accepted" in result.stdout
        assert result.stderr.count("FEEDBACK_CONFLICT") == 2 and "line 3:" in result.stderr
