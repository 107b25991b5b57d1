"""Category heads and exact explanations (#26): trained from the same features, served from the
data-only artifact exactly, and each score taken apart into contributions that add up to its logit."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from shared_features import load_artifact
from shared_features.pickled import load_category_heads, load_pipeline
from shared_features.presets import resolve_params
from shared_features.scorer_artifact import FORMAT, FORMAT_WITH_CATEGORIES
from shared_features.sources import UNKNOWN, Source, load_source, read_spec
from shared_features.text import normalize_texts
from shared_features.training import train_sources
from tests.conftest import SHIPPED_MODELS, make_rows

V3 = SHIPPED_MODELS / "toxicity" / "v3"


@pytest.fixture(scope="module")
def tiny_categories(tmp_path_factory):
    """A model trained on a tiny source whose rows say hate / offensive / neither."""
    root = tmp_path_factory.mktemp("categories")
    rows = make_rows(400, seed=3)
    rows["category"] = [
        "neither" if not y else ("hate" if i % 3 == 0 else "offensive") for i, y in enumerate(rows.label)
    ]
    rows.loc[rows.category == "hate", "text"] += " women are vermin"
    rows.to_csv(root / "rows.csv", index=False)
    source = Source(
        "rows",
        "rows.csv",
        categories={
            "hate": {"column": "category", "positive": ("hate",), "negative": ("offensive", "neither")},
            "offensive": {"column": "category", "positive": ("offensive",), "negative": ("neither",)},
        },
    )
    data = load_source(source, root)
    manifest = train_sources([data], "t", "v1", resolve_params("robust-words"), root / "models", preset="robust-words")
    return root / "models" / "t" / "v1", manifest, data


def test_unlabelled_rows_are_unknown_for_a_category(tiny_categories):
    _, _, data = tiny_categories
    offensive = data.categories["offensive"]
    assert set(offensive[data.labels == 0]) == {0}
    assert UNKNOWN in offensive and 1 in offensive  # a hate row says nothing about offensive


def test_the_manifest_declares_categories_with_thresholds_and_figures(tiny_categories):
    directory, manifest, _ = tiny_categories
    assert list(manifest["categories"]) == ["hate", "offensive"]
    for category in manifest["categories"].values():
        assert 0 < category["threshold"] < 1 and category["threshold_source"] == "validation macro-F1"
        assert category["description"]
    assert manifest["metrics"]["categories"]["hate"]["rows"]["test"]["roc_auc"] > 0.5
    assert manifest["data_only"]["format"] == FORMAT_WITH_CATEGORIES
    assert json.loads((directory / "scorer.json").read_text())["categories"] == ["hate", "offensive"]


def test_categories_are_served_exactly_from_the_data_only_artifact(tiny_categories):
    directory, manifest, data = tiny_categories
    model = load_artifact(directory)
    assert model.pipeline is None and list(model.categories) == ["hate", "offensive"]
    pipeline, _ = load_pipeline(directory, manifest, "error")
    heads = load_category_heads(directory, manifest)
    texts = data.texts
    features = pipeline[:-1].transform(texts)
    expected = np.column_stack([heads[name].predict_proba(features)[:, 1] for name in ("hate", "offensive")])
    assert np.abs(model.category_scores(normalize_texts(texts)) - expected).max() <= 1e-12


def test_a_model_without_categories_keeps_the_first_format(tiny_model_root):
    model = load_artifact(tiny_model_root / "toxicity" / "v1")
    assert model.manifest["data_only"]["format"] == FORMAT
    assert model.categories == {} and model.explains


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_contributions_and_intercept_add_up_to_the_logit_on_every_held_out_row(shipped_registry, version, shared_data):
    """Every held-out row of ToxiGen (the v3 spec's smallest source), for every shipped version."""
    model = shipped_registry.load("toxicity", version)
    source = {s.name: s for s in read_spec(SHIPPED_MODELS / "toxicity" / "sources.json")}["toxigen2022"]
    data = load_source(source)
    texts = data.part("validation")[0] + data.part("test")[0]
    scores = model.score(texts)
    for raw, score in zip(texts, scores.tolist(), strict=True):
        explained = model.explain(raw, top=10_000)
        total = explained["intercept"] + sum(item["contribution"] for item in explained["explanation"])
        assert abs(total - _logit(score)) <= 1e-9
        assert len(explained["explanation"]) == explained["features"]
        for item in explained["explanation"]:
            assert raw[item["start"] : item["end"]] == item["text"] and item["text"]


def test_category_contributions_add_up_to_each_categorys_logit(shipped_registry):
    model = shipped_registry.load("toxicity", "v3")
    texts = ["Muslims are VERMIN, you 1d10t!", "have a lovely day", "I would never say women are trash"]
    probabilities = model.category_scores(normalize_texts(texts))
    intercepts = dict(zip(model.scorer.categories, model.scorer.category_intercept.tolist(), strict=True))
    for raw, row in zip(texts, probabilities.tolist(), strict=True):
        explanation = model.explain(raw, top=10_000)["explanation"]
        for index, name in enumerate(model.categories):
            total = intercepts[name] + sum(item["categories"][name] for item in explanation)
            assert abs(total - _logit(row[index])) <= 1e-9


def test_the_top_k_are_the_largest_contributions_first(shipped_registry):
    model = shipped_registry.load("toxicity", "v3")
    everything = model.explain("Muslims are VERMIN, you 1d10t!", top=10_000)["explanation"]
    top = model.explain("Muslims are VERMIN, you 1d10t!", top=3)["explanation"]
    sizes = [abs(item["contribution"]) for item in everything]
    assert sizes == sorted(sizes, reverse=True)
    assert top == everything[:3]
    assert model.explain("qqqq zzzz", top=5)["explanation"] == []  # nothing known: only the intercept


@pytest.mark.parametrize("source_name", ["toxigen2022", "hatemoji2022", "paradetox2022"])
def test_shipped_v3_categories_equal_its_trained_heads(shipped_registry, source_name, shared_data):
    model = shipped_registry.load("toxicity", "v3")
    manifest = model.manifest
    pipeline, _ = load_pipeline(V3, manifest, "error")
    heads = load_category_heads(V3, manifest)
    source = {s.name: s for s in read_spec(SHIPPED_MODELS / "toxicity" / "sources.json")}[source_name]
    texts = pd.Series(load_source(source).part("test")[0]).tolist()
    features = pipeline[:-1].transform(texts)
    expected = np.column_stack([heads[name].predict_proba(features)[:, 1] for name in model.categories])
    assert np.abs(model.category_scores(normalize_texts(texts)) - expected).max() <= 1e-12


def test_scoring_with_categories_gives_the_plain_scores_exactly(shipped_registry, shared_data):
    """The one-pass path (small batches) and the vectorised one (big batches) agree with the plain ones."""
    model = shipped_registry.load("toxicity", "v3")
    source = {s.name: s for s in read_spec(SHIPPED_MODELS / "toxicity" / "sources.json")}["toxigen2022"]
    texts = load_source(source).part("test")[0]
    normalised = normalize_texts(texts)
    scores, oov, categories = model.scorer.per_text_with_categories(normalised)
    plain_scores, plain_oov = model.scorer.per_text(normalised)
    assert scores.tolist() == plain_scores.tolist() and oov.tolist() == plain_oov.tolist()
    big_scores, _, big_categories = model.score_with_categories(normalised, texts)  # over the per-text size
    assert len(texts) > model.per_text_max_batch
    assert np.abs(big_scores - plain_scores).max() <= 1e-12 and np.abs(big_categories - categories).max() == 0
