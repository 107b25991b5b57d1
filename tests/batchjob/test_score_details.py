"""`batchjob score` with a model that has categories, and `--explain K` (#26): through click's runner
and as a subprocess, local and (when installed) on Dask."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from batchjob.cli import cli
from shared_features import ModelRegistry
from shared_features.text import normalize_texts
from tests.conftest import SHIPPED_MODELS

BIN = Path(sys.executable).parent
TEXTS = ["Muslims are VERMIN, you 1d10t!", "have a lovely day", "", "I would never say women are trash"]


@pytest.fixture(scope="module")
def v3():
    return ModelRegistry(SHIPPED_MODELS).load("toxicity", "v3")


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.csv"
    pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}).to_csv(path, index=False)
    return path


def check(out: pd.DataFrame, model, k: int) -> None:
    texts = [t for t in TEXTS if t]
    assert list(out.columns) == ["id", "score", "label", "model_version", "score_hate", "score_offensive"] + (
        ["explanation"] if k else []
    )
    expected = model.category_scores(normalize_texts(texts))
    assert abs(out[["score_hate", "score_offensive"]].to_numpy() - expected).max() <= 1e-12
    if k:
        for text, cell in zip(texts, out["explanation"], strict=True):
            explanation = json.loads(cell)
            assert explanation == model.explain(text, k)["explanation"]
            assert all(text[i["start"] : i["end"]] == i["text"] for i in explanation)


def test_categories_come_as_columns_and_explain_adds_one(source, tmp_path, v3, runner):
    base = ["--model-dir", str(SHIPPED_MODELS), "score", str(source), "--model-version", "v3", "--workers", "1"]
    plain = runner.invoke(cli, [*base, "--output", str(tmp_path / "plain.csv")])
    assert plain.exit_code == 0, plain.output
    check(pd.read_csv(tmp_path / "plain.csv"), v3, 0)
    explained = runner.invoke(cli, [*base, "--output", str(tmp_path / "x.parquet"), "--explain", "3"])
    assert explained.exit_code == 0, explained.output
    check(pd.read_parquet(tmp_path / "x.parquet"), v3, 3)
    assert json.loads(explained.output)["rows_rejected"] == 1  # the empty text, in the rejects as always


def test_a_model_without_categories_keeps_its_columns(source, tmp_path, runner):
    args = ["--model-dir", str(SHIPPED_MODELS), "score", str(source), "--model-version", "v1", "--workers", "1"]
    assert runner.invoke(cli, [*args, "--output", str(tmp_path / "v1.csv")]).exit_code == 0
    assert list(pd.read_csv(tmp_path / "v1.csv").columns) == ["id", "score", "label", "model_version"]


def test_explain_as_a_subprocess_with_helpers(source, tmp_path, v3):
    out = tmp_path / "sub.csv"
    args = ["--model-dir", str(SHIPPED_MODELS), "score", str(source), "--model-version", "v3"]
    process = subprocess.run(
        [str(BIN / "batchjob"), *args, "--output", str(out), "--explain", "2", "--workers", "2", "--chunk-size", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    check(pd.read_csv(out), v3, 2)


@pytest.mark.parametrize("bad", ["51", "-1", "two"])
def test_explain_out_of_range_is_a_usage_error(source, tmp_path, runner, bad):
    args = ["--model-dir", str(SHIPPED_MODELS), "score", str(source), "--output", str(tmp_path / "o.csv")]
    result = runner.invoke(cli, [*args, "--explain", bad])
    assert result.exit_code == 2 and "--explain" in result.output


def test_an_input_with_a_category_column_needs_a_prefix(tmp_path, runner):
    path = tmp_path / "clash.csv"
    pd.DataFrame({"text": ["you idiot"], "score_hate": [1]}).to_csv(path, index=False)
    args = ["--model-dir", str(SHIPPED_MODELS), "score", str(path), "--model-version", "v3", "--workers", "1"]
    refused = runner.invoke(cli, [*args, "--output", str(tmp_path / "o.csv")])
    assert refused.exit_code == 1 and "--output-prefix" in refused.output


def test_dask_adds_the_same_columns(tmp_path, v3, runner):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    path = tmp_path / "in.parquet"
    pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}).to_parquet(path)
    args = ["--model-dir", str(SHIPPED_MODELS), "score", str(path), "--model-version", "v3", "--engine", "dask"]
    result = runner.invoke(cli, [*args, "--output", str(tmp_path / "out"), "--workers", "1", "--explain", "2"])
    assert result.exit_code == 0, result.output
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    check(out.reset_index(drop=True), v3, 2)
