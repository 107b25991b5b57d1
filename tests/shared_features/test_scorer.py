"""The data-only scorer equals the pickled pipeline's predict_proba to 1e-12, by both paths."""

import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline

from shared_features import build_pipeline, load_artifact, normalize_texts, resolve_params, save_artifact
from shared_features.artifacts import PickleRefusedError
from shared_features.dataset import read_labeled
from shared_features.errors import ModelError
from shared_features.scorer_artifact import check_reproduces, from_pipeline

TOLERANCE = 1e-12


def max_delta(model, texts, reference):
    """Worst |difference| of either path from the pipeline's predict_proba on `texts`."""
    normalised = normalize_texts(texts)
    return max(
        float(np.abs(model.scorer.per_text(normalised)[0] - reference).max()),
        float(np.abs(model.scorer.vectorised(normalised)[0] - reference).max()),
        float(np.abs(model.score(texts) - reference).max()),
    )


@pytest.fixture(scope="module")
def shipped(shipped_registry):
    return {v: shipped_registry.load("toxicity", v) for v in ("v1", "v2")}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_every_dataset_row(shipped, shared_data, reference_proba, version):
    model = shipped[version]
    assert model.source == "data-only" and model.pipeline is None
    texts = pd.read_csv(shared_data)["text"].tolist()
    assert len(texts) == 24_783
    assert max_delta(model, texts, reference_proba(version, texts)) <= TOLERANCE


def test_one_text_at_a_time_equals_the_batch_reference(shipped, shared_data, reference_proba):
    """predict_proba([text]) per row, as a client scoring one text sees it (a sample: it is slow)."""
    texts = pd.read_csv(shared_data)["text"].tolist()[::97]
    for version, model in shipped.items():
        single = np.array([reference_proba(version, [text])[0] for text in texts])
        assert np.abs(model.score(texts) - single).max() <= TOLERANCE


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=8))
def test_arbitrary_unicode(shipped, reference_proba, texts):
    for version, model in shipped.items():
        assert max_delta(model, texts, reference_proba(version, texts)) <= TOLERANCE


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\x00\x01", "zzqxw" * 50, "ǅ ﬁ ẞ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀" * 20, "you idiot " * 400, "a" * 50_000, "&amp;" * 100],
)
def test_edge_cases(shipped, reference_proba, text):
    for version, model in shipped.items():
        assert max_delta(model, [text], reference_proba(version, [text])) <= TOLERANCE


def test_out_of_vocabulary_only_is_the_intercept(shipped):
    scorer = shipped["v1"].scorer
    for path in (scorer.per_text, scorer.vectorised):
        scores, oov = path(["qqqzzz xxyyww"])
        assert scores[0] == pytest.approx(1 / (1 + np.exp(-scorer.intercept)), abs=TOLERANCE)
        assert oov[0] == 1.0  # every token out of vocabulary


def test_both_paths_give_the_same_oov_rates(shipped, shared_data):
    normalised = normalize_texts(pd.read_csv(shared_data)["text"].tolist()[:2000])
    for model in shipped.values():
        np.testing.assert_allclose(model.scorer.per_text(normalised)[1], model.scorer.vectorised(normalised)[1])


@pytest.mark.parametrize(
    "vectorizer",
    [
        {"sublinear_tf": False},
        {"norm": "l1"},
        {"norm": None},
        {"binary": True},
        {"analyzer": "char_wb", "ngram_range": [2, 4], "smooth_idf": False},
        {"ngram_range": [1, 3], "max_features": 50},
        {"ngram_range": [2, 2], "token_pattern": r"(?u)\b\w+\b"},
    ],
)
def test_vectorizer_options(tiny_csv, tmp_path, vectorizer):
    """Every supported option is written as data, loaded without the pickle and exact."""
    data = read_labeled(tiny_csv)
    params = resolve_params("word-ngrams", {"vectorizer": vectorizer, "classifier": {"class_weight": "balanced"}})
    pipeline = build_pipeline(params).fit(data.texts, data.labels)
    manifest = {"name": "o", "version": "v1", "threshold": 0.5}
    save_artifact(pipeline, tmp_path / "o" / "v1", manifest, check_texts=data.texts)
    model = load_artifact(tmp_path / "o" / "v1", allow_pickle=False)
    texts = data.texts[:100] + ["", "unseen words only", "the the the idiot idiot"]
    assert max_delta(model, texts, pipeline.predict_proba(texts)[:, 1]) <= TOLERANCE


def test_unsupported_pipeline_falls_back_to_its_pickle_logged_once(tiny_csv, tmp_path, caplog):
    data = read_labeled(tiny_csv)
    pipeline = build_pipeline(resolve_params("word-ngrams"))
    pipeline = Pipeline([*pipeline.steps[:2], ("clf", MultinomialNB())]).fit(data.texts, data.labels)
    with caplog.at_level(logging.WARNING):
        manifest = save_artifact(
            pipeline, tmp_path / "nb" / "v1", {"name": "nb", "version": "v1", "threshold": 0.5}, []
        )
    assert "data_only" not in manifest and "LogisticRegression" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model = load_artifact(tmp_path / "nb" / "v1")
    assert model.source == "pickle" and model.scorer is None
    assert caplog.text.count("has no data-only scorer: loading its pickle") == 1
    texts = data.texts[:20]
    scores, oov = model.score_with_oov(normalize_texts(texts), texts)
    assert oov is None and np.array_equal(scores, pipeline.predict_proba(texts)[:, 1])
    with pytest.raises(PickleRefusedError, match="TOXISERVE_ALLOW_PICKLE=false.*batchjob export"):
        load_artifact(tmp_path / "nb" / "v1", allow_pickle=False)


def test_a_scorer_that_does_not_reproduce_is_never_named_by_a_manifest(tiny_csv, tmp_path, monkeypatch):
    data = read_labeled(tiny_csv)
    pipeline = build_pipeline(resolve_params("word-ngrams")).fit(data.texts, data.labels)
    scorer = from_pipeline(pipeline)
    assert check_reproduces(scorer, pipeline, data.texts)["max_abs_difference"] <= TOLERANCE
    scorer.intercept += 1e-9  # off by far less than anyone would see, far more than allowed
    with pytest.raises(ModelError, match="differs from predict_proba"):
        check_reproduces(scorer, pipeline, data.texts)

    real = from_pipeline

    def slightly_wrong(pipeline, **kwargs):
        broken = real(pipeline, **kwargs)
        broken.intercept += 1e-6
        return broken

    monkeypatch.setattr("shared_features.artifacts.from_pipeline", slightly_wrong)
    with pytest.raises(ModelError, match="differs from predict_proba"):
        save_artifact(pipeline, tmp_path / "w" / "v1", {"name": "w", "version": "v1", "threshold": 0.5}, data.texts)
    assert not (tmp_path / "w" / "v1" / "manifest.json").exists()


def test_batch_size_picks_the_path(shipped, monkeypatch):
    v2 = shipped["v2"]
    calls = []
    for path in ("per_text", "vectorised"):
        real = getattr(v2.scorer, path)
        monkeypatch.setattr(
            v2.scorer, path, lambda normalised, real=real, path=path: calls.append(path) or real(normalised)
        )
    small, large = ["some text"] * v2.per_text_max_batch, ["some text"] * (v2.per_text_max_batch + 1)
    v2.score_with_oov(small, small)
    v2.score_with_oov(large, large)
    assert calls == ["per_text", "vectorised"]
