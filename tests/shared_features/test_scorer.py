"""The compiled scorer equals predict_proba to 1e-12, or steps aside for pipelines it can't compile."""

import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline

from shared_features import build_pipeline, load_artifact, normalize_texts, resolve_params, save_artifact
from shared_features.dataset import read_labeled
from shared_features.scorer import compile_pipeline

TOLERANCE = 1e-12


def max_delta(model, texts):
    normalised = normalize_texts(texts)
    compiled, _ = model.scorer.score(normalised)
    return float(np.abs(compiled - model.pipeline.predict_proba(texts)[:, 1]).max())


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_every_dataset_row(shipped_registry, shared_data, version):
    model = shipped_registry.load("toxicity", version)
    assert model.scorer is not None
    texts = pd.read_csv(shared_data)["text"].tolist()
    assert len(texts) == 24_783
    assert max_delta(model, texts) <= TOLERANCE


@pytest.fixture(scope="module")
def shipped(shipped_registry):
    return [shipped_registry.load("toxicity", v) for v in ("v1", "v2")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=8))
def test_arbitrary_unicode(shipped, texts):
    for model in shipped:
        assert max_delta(model, texts) <= TOLERANCE


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\x00\x01", "zzqxw" * 50, "ǅ ﬁ ẞ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀" * 20, "you idiot " * 400, "a" * 50_000, "&amp;" * 100],
)
def test_edge_cases(shipped, text):
    for model in shipped:
        assert max_delta(model, [text]) <= TOLERANCE


def test_out_of_vocabulary_only_is_the_intercept(shipped):
    from scipy.special import expit

    v1 = shipped[0]
    intercept = v1.pipeline.steps[2][1].intercept_[0]
    assert v1.scorer.score(["qqqzzz xxyyww"])[0][0] == pytest.approx(expit(intercept), abs=TOLERANCE)
    assert v1.scorer.score(["qqqzzz xxyyww"])[1][0] == 1.0  # every token out of vocabulary


@pytest.mark.parametrize(
    "vectorizer",
    [
        {"sublinear_tf": False},
        {"norm": "l1"},
        {"norm": None},
        {"binary": True},
        {"analyzer": "char", "ngram_range": [1, 3]},
        {"analyzer": "char_wb", "ngram_range": [2, 4], "smooth_idf": False},
        {"ngram_range": [1, 3], "max_features": 50},
    ],
)
def test_vectorizer_options(tiny_csv, vectorizer):
    data = read_labeled(tiny_csv)
    params = resolve_params("word-ngrams", {"vectorizer": vectorizer, "classifier": {"class_weight": "balanced"}})
    pipeline = build_pipeline(params).fit(data.texts, data.labels)
    scorer = compile_pipeline(pipeline)
    texts = data.texts[:100] + ["", "unseen words only", "the the the idiot idiot"]
    compiled, _ = scorer.score(normalize_texts(texts))
    assert np.abs(compiled - pipeline.predict_proba(texts)[:, 1]).max() <= TOLERANCE


def test_uncompilable_pipeline_falls_back_logged_once(tiny_csv, tmp_path, caplog):
    data = read_labeled(tiny_csv)
    pipeline = build_pipeline(resolve_params("word-ngrams"))
    pipeline = Pipeline([*pipeline.steps[:2], ("clf", MultinomialNB())]).fit(data.texts, data.labels)
    save_artifact(pipeline, tmp_path / "nb" / "v1", {"name": "nb", "version": "v1", "threshold": 0.5})
    with caplog.at_level(logging.WARNING):
        model = load_artifact(tmp_path / "nb" / "v1")
    assert model.scorer is None and model.compiled_max_batch == 0
    assert caplog.text.count("no compiled scorer") == 1 and "LogisticRegression" in caplog.text
    texts = data.texts[:20]
    scores, oov = model.score_with_oov(normalize_texts(texts), texts)
    assert oov is None and np.array_equal(scores, pipeline.predict_proba(texts)[:, 1])


def test_batch_size_picks_the_path(shipped, monkeypatch):
    v2 = shipped[1]
    calls = []
    real = v2.scorer.score
    monkeypatch.setattr(v2.scorer, "score", lambda normalised: calls.append(len(normalised)) or real(normalised))
    small, large = ["some text"] * v2.compiled_max_batch, ["some text"] * (v2.compiled_max_batch + 1)
    assert v2.score_with_oov(small, small)[1] is not None
    assert v2.score_with_oov(large, large)[1] is None  # vectorised predict_proba
    assert calls == [v2.compiled_max_batch]
