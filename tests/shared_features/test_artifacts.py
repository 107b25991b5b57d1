import json
import logging
import pickle
import shutil

import joblib
import numpy as np
import pytest

from shared_features import (
    ChecksumMismatchError,
    FeatureCodeMismatchError,
    LibraryVersionError,
    ModelError,
    ModelRegistry,
    load_artifact,
)
from shared_features.artifacts import library_versions, sha256_file
from shared_features.scorer_artifact import ARRAYS_FILE, JSON_FILE

REQUIRED_MANIFEST_KEYS = {
    "name",
    "version",
    "threshold",
    "sha256",
    "created_at",
    "params",
    "metrics",
    "training_data",
    "libraries",
}


@pytest.fixture
def artifact_copy(tiny_model_root, tmp_path):
    target = tmp_path / "toxicity" / "v1"
    shutil.copytree(tiny_model_root / "toxicity" / "v1", target)
    return target


@pytest.fixture
def pickle_only(artifact_copy):
    """An artifact from before data-only scorers: serving falls back to its pickle."""
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    del manifest["data_only"]
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    (artifact_copy / JSON_FILE).unlink()
    (artifact_copy / ARRAYS_FILE).unlink()
    return artifact_copy


def edit_manifest(directory, **changes):
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_manifest_contents(tiny_model_root, tiny_csv):
    manifest = json.loads((tiny_model_root / "toxicity" / "v1" / "manifest.json").read_text())
    assert REQUIRED_MANIFEST_KEYS <= manifest.keys()
    assert manifest["sha256"] == sha256_file(tiny_model_root / "toxicity" / "v1" / "model.joblib")
    training_data = manifest["training_data"]
    assert {k: training_data[k] for k in ("sha256", "rows", "source")} == {
        "sha256": sha256_file(tiny_csv),
        "rows": 400,
        "source": "tiny.csv",
    }
    (only,) = training_data["sources"]  # one file is a one-source spec
    assert only["sha256"] == sha256_file(tiny_csv) and only["file"] == "tiny.csv"
    assert only["splits"] == manifest["splits"] and sum(only["rows_used"].values()) == manifest["splits"]["train"]
    assert set(manifest["libraries"]) == {"python", "scikit-learn", "numpy", "joblib"}
    assert manifest["libraries"] == library_versions()
    test_metrics = manifest["metrics"]["test"]
    assert {"roc_auc", "macro_f1", "classes"} <= test_metrics.keys()
    assert {"precision", "recall", "f1", "support"} <= test_metrics["classes"]["clean"].keys()
    assert set(manifest["data_only"]["files"]) == {JSON_FILE, ARRAYS_FILE}
    for name, digest in manifest["data_only"]["files"].items():
        assert digest == sha256_file(tiny_model_root / "toxicity" / "v1" / name)
    assert manifest["data_only"]["verified"]["max_abs_difference"] <= 1e-12


def test_data_only_round_trip_equals_plain_joblib_and_never_unpickles(artifact_copy, monkeypatch):
    texts = ["you are an idiot", "lovely sunny day", "", "unseen words entirely"]
    plain = joblib.load(artifact_copy / "model.joblib").predict_proba(texts)[:, 1]
    unpickled = []
    monkeypatch.setattr(joblib, "load", lambda *a, **k: unpickled.append(a))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(a))
    loaded = load_artifact(artifact_copy, allow_pickle=False)
    assert np.abs(loaded.score(texts) - plain).max() <= 1e-12
    assert (loaded.name, loaded.version, loaded.threshold, loaded.source) == ("toxicity", "v1", 0.5, "data-only")
    assert unpickled == []


def test_pickle_round_trip_scores_equal_plain_joblib(pickle_only):
    texts = ["you are an idiot", "lovely sunny day", "", "unseen words entirely"]
    loaded = load_artifact(pickle_only)
    plain = joblib.load(pickle_only / "model.joblib").predict_proba(texts)[:, 1]
    assert loaded.source == "pickle" and np.abs(loaded.score(texts) - plain).max() <= 1e-12


def test_artifacts_in_joblibs_own_format_still_load(pickle_only):
    """Artifacts from before the manifest named a serializer were written by joblib.dump."""
    texts = ["you are an idiot", "lovely sunny day"]
    expected = load_artifact(pickle_only).score(texts)
    pipeline = joblib.load(pickle_only / "model.joblib")
    joblib.dump(pipeline, pickle_only / "model.joblib", compress=3)
    manifest = json.loads((pickle_only / "manifest.json").read_text())
    del manifest["serializer"]
    manifest["sha256"] = sha256_file(pickle_only / "model.joblib")
    (pickle_only / "manifest.json").write_text(json.dumps(manifest))
    assert load_artifact(pickle_only).score(texts).tolist() == expected.tolist()


def test_unknown_serializer_is_refused(pickle_only):
    edit_manifest(pickle_only, serializer="cloudpickle")
    with pytest.raises(ModelError, match="unknown serializer 'cloudpickle'"):
        load_artifact(pickle_only)


def test_tampered_model_is_refused_before_unpickling(pickle_only, monkeypatch):
    with open(pickle_only / "model.joblib", "ab") as handle:
        handle.write(b"\x00")
    unpickled = []
    monkeypatch.setattr(joblib, "load", lambda *a, **k: unpickled.append(a))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(a))
    with pytest.raises(ChecksumMismatchError) as caught:
        load_artifact(pickle_only)
    assert str(pickle_only / "model.joblib") in str(caught.value)
    assert unpickled == []


@pytest.mark.parametrize("name", [JSON_FILE, ARRAYS_FILE])
def test_tampered_data_only_scorer_is_refused(artifact_copy, name):
    with open(artifact_copy / name, "ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(ChecksumMismatchError, match=name):
        load_artifact(artifact_copy)


def test_a_changed_tokenizer_is_detected(artifact_copy, monkeypatch):
    from shared_features.tokenizers import WordNgrams

    real = WordNgrams.__call__
    monkeypatch.setattr(WordNgrams, "__call__", lambda self, text: [t.upper() for t in real(self, text)])
    with pytest.raises(FeatureCodeMismatchError, match="word_ngrams now tokenises differently"):
        load_artifact(artifact_copy)


def test_library_mismatch_refused_by_default_and_warned_on_request(pickle_only, caplog):
    libraries = {**library_versions(), "scikit-learn": "0.24.2"}
    edit_manifest(pickle_only, libraries=libraries)
    with pytest.raises(LibraryVersionError, match="scikit-learn 0.24.2 at training"):
        load_artifact(pickle_only)
    with caplog.at_level(logging.WARNING):
        loaded = load_artifact(pickle_only, on_version_mismatch="warn")
    assert loaded.warnings and "scikit-learn 0.24.2" in caplog.text


def test_data_only_scorer_ignores_library_versions(artifact_copy):
    """It is numbers read by numpy: the scikit-learn that wrote it does not matter to serving."""
    edit_manifest(artifact_copy, libraries={**library_versions(), "scikit-learn": "0.24.2"})
    assert load_artifact(artifact_copy).source == "data-only"


@pytest.mark.parametrize("source", ["artifact_copy", "pickle_only"])
def test_changed_normaliser_is_detected(request, source):
    directory = request.getfixturevalue(source)
    edit_manifest(directory, feature_fingerprint="0" * 64)
    with pytest.raises(FeatureCodeMismatchError, match="normaliser"):
        load_artifact(directory)


def test_registry_lists_and_refuses_paths_outside_root(tiny_model_root):
    registry = ModelRegistry(tiny_model_root)
    assert registry.names() == ["toxicity"]
    assert registry.versions("toxicity") == ["v1", "v2"]
    assert registry.latest("toxicity") == "v2"
    for bad in ("..", "../etc", "a/b", ""):
        with pytest.raises(Exception) as caught:
            registry.load("toxicity", bad)
        assert getattr(caught.value, "error_code", None) == "NOT_FOUND"
