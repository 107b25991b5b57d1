"""Bad canaries, built in the tests: the shipped v1 pipeline wrapped to raise on some texts or to
sleep, saved as pickle-only artifacts (serving loads them through the verified-pickle fallback,
as it would any model without a data-only scorer); and a model trained on inverted labels."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pandas as pd

from shared_features import resolve_params, save_artifact
from shared_features.dataset import read_labeled
from shared_features.training import train_model

from .faulty_pipelines import RaisesOnSome, Sleeps
from .server import REPO_ROOT

DERIVED = ("sha256", "size_bytes", "libraries", "serializer", "data_only", "feature_fingerprint")


def save_wrapped(root: Path, version: str, wrap) -> None:
    """`wrap(v1's pipeline)` as model `version`: v1's manifest (threshold, drift profile), pickle only."""
    import joblib

    base = root / "toxicity" / "v1"
    manifest = json.loads((base / "manifest.json").read_text())
    kept = {key: value for key, value in manifest.items() if key not in DERIVED}
    save_artifact(wrap(joblib.load(base / "model.joblib")), root / "toxicity" / version, {**kept, "version": version})


def train_inverted(models: Path, data_csv: Path, version: str, scratch: Path, rows: int = 6000) -> None:
    """A model trained on the dataset with every label flipped."""
    frame = pd.read_csv(data_csv).sample(rows, random_state=3)
    frame["label"] = 1 - frame["label"]
    flipped = scratch / "inverted.csv"
    frame.to_csv(flipped, index=False)
    train_model(read_labeled(flipped), "toxicity", version, resolve_params("word-ngrams"), models, threshold=0.5)


def build(root: Path, data_csv: Path) -> Path:
    """The shipped models plus v10 (inverted labels), v4 (raises on some texts), v5 (sleeps 50 ms)
    and v6 (a byte-identical copy of v1: a canary that is as good as the stable by construction)."""
    models = root / "models"
    shutil.copytree(REPO_ROOT / "models", models)
    train_inverted(models, data_csv, "v10", root)
    save_wrapped(models, "v4", RaisesOnSome)
    save_wrapped(models, "v5", lambda pipeline: Sleeps(pipeline, 0.05))
    shutil.copytree(models / "toxicity" / "v1", models / "toxicity" / "v6")
    manifest = json.loads((models / "toxicity" / "v6" / "manifest.json").read_text())
    (models / "toxicity" / "v6" / "manifest.json").write_text(json.dumps({**manifest, "version": "v6"}))
    return models


def dataset_rows(data_csv: Path, n: int = 4000) -> list[tuple[str, str]]:
    """(text, true label) pairs of real tweets, shuffled."""
    frame = pd.read_csv(data_csv)
    rows = [(text, "toxic" if label else "clean") for text, label in zip(frame.text, frame.label, strict=True)]
    random.Random(5).shuffle(rows)
    return rows[:n]
