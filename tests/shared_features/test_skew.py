"""Training-serving skew: the in-memory fitted pipeline and the saved artifact score identically (to 1e-12:
the data-only scorer adds the same terms in another order)."""

import numpy as np

from shared_features import build_pipeline, load_artifact, resolve_params, save_artifact
from shared_features.dataset import read_labeled
from shared_features.training import split, train_model


def test_training_path_and_loaded_artifact_give_identical_scores(tiny_csv, tmp_path):
    data = read_labeled(tiny_csv)
    params = resolve_params("char-ngrams")
    train_x, train_y = split(data)["train"]
    fitted = build_pipeline(params).fit(train_x, train_y)
    save_artifact(fitted, tmp_path / "m" / "v1", {"name": "m", "version": "v1", "threshold": 0.5}, train_x)
    rows = data.texts + ["", "   ", "&amp;&amp;", "ÜNÏCÖDË ｆｕｌｌ", "x" * 2000]
    in_memory = fitted.predict_proba(rows)[:, 1]
    served = load_artifact(tmp_path / "m" / "v1", allow_pickle=False)
    assert np.abs(in_memory - served.score(rows)).max() <= 1e-12


def test_same_data_and_params_give_the_same_scores(tiny_csv, tmp_path):
    data = read_labeled(tiny_csv)
    first = train_model(data, "m", "a", resolve_params("word-ngrams"), tmp_path, threshold=None)
    second = train_model(data, "m", "b", resolve_params("word-ngrams"), tmp_path, threshold=None)
    assert first["metrics"] == second["metrics"] and first["threshold"] == second["threshold"]
    texts = data.texts[:50]
    assert np.array_equal(
        load_artifact(tmp_path / "m" / "a").score(texts), load_artifact(tmp_path / "m" / "b").score(texts)
    )
