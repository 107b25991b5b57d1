import json
import logging
import pickle
import shutil

import joblib
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


def edit_manifest(directory, **changes):
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_manifest_contents(tiny_model_root, tiny_csv):
    manifest = json.loads((tiny_model_root / "toxicity" / "v1" / "manifest.json").read_text())
    assert REQUIRED_MANIFEST_KEYS <= manifest.keys()
    assert manifest["sha256"] == sha256_file(tiny_model_root / "toxicity" / "v1" / "model.joblib")
    assert manifest["training_data"] == {"sha256": sha256_file(tiny_csv), "rows": 400, "source": "tiny.csv"}
    assert set(manifest["libraries"]) == {"python", "scikit-learn", "numpy", "joblib"}
    assert manifest["libraries"] == library_versions()
    test_metrics = manifest["metrics"]["test"]
    assert {"roc_auc", "macro_f1", "classes"} <= test_metrics.keys()
    assert {"precision", "recall", "f1", "support"} <= test_metrics["classes"]["clean"].keys()


def test_round_trip_scores_equal_plain_joblib(artifact_copy):
    texts = ["you are an idiot", "lovely sunny day", "", "unseen words entirely"]
    loaded = load_artifact(artifact_copy)
    plain = joblib.load(artifact_copy / "model.joblib").predict_proba(texts)[:, 1]
    assert loaded.score(texts).tolist() == plain.tolist()
    assert (loaded.name, loaded.version, loaded.threshold) == ("toxicity", "v1", 0.5)


def test_artifacts_in_joblibs_own_format_still_load(artifact_copy):
    """Artifacts from before the manifest named a serializer were written by joblib.dump."""
    texts = ["you are an idiot", "lovely sunny day"]
    expected = load_artifact(artifact_copy).score(texts)
    pipeline = joblib.load(artifact_copy / "model.joblib")
    joblib.dump(pipeline, artifact_copy / "model.joblib", compress=3)
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    del manifest["serializer"]
    manifest["sha256"] = sha256_file(artifact_copy / "model.joblib")
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_artifact(artifact_copy).score(texts).tolist() == expected.tolist()


def test_unknown_serializer_is_refused(artifact_copy):
    edit_manifest(artifact_copy, serializer="cloudpickle")
    with pytest.raises(ModelError, match="unknown serializer 'cloudpickle'"):
        load_artifact(artifact_copy)


def test_tampered_model_is_refused_before_unpickling(artifact_copy, monkeypatch):
    with open(artifact_copy / "model.joblib", "ab") as handle:
        handle.write(b"\x00")
    unpickled = []
    monkeypatch.setattr(joblib, "load", lambda *a, **k: unpickled.append(a))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(a))
    with pytest.raises(ChecksumMismatchError) as caught:
        load_artifact(artifact_copy)
    assert str(artifact_copy / "model.joblib") in str(caught.value)
    assert unpickled == []


def test_library_mismatch_refused_by_default_and_warned_on_request(artifact_copy, caplog):
    libraries = {**library_versions(), "scikit-learn": "0.24.2"}
    edit_manifest(artifact_copy, libraries=libraries)
    with pytest.raises(LibraryVersionError, match="scikit-learn 0.24.2 at training"):
        load_artifact(artifact_copy)
    with caplog.at_level(logging.WARNING):
        loaded = load_artifact(artifact_copy, on_version_mismatch="warn")
    assert loaded.warnings and "scikit-learn 0.24.2" in caplog.text


def test_changed_normaliser_is_detected(artifact_copy):
    edit_manifest(artifact_copy, feature_fingerprint="0" * 64)
    with pytest.raises(FeatureCodeMismatchError, match="normaliser"):
        load_artifact(artifact_copy)


def test_registry_lists_and_refuses_paths_outside_root(tiny_model_root):
    registry = ModelRegistry(tiny_model_root)
    assert registry.names() == ["toxicity"]
    assert registry.versions("toxicity") == ["v1", "v2"]
    assert registry.latest("toxicity") == "v2"
    for bad in ("..", "../etc", "a/b", ""):
        with pytest.raises(Exception) as caught:
            registry.load("toxicity", bad)
        assert getattr(caught.value, "error_code", None) == "NOT_FOUND"
