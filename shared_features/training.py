"""Training: split, fit, choose the threshold, evaluate on held-out data, write the artifact."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn.model_selection import train_test_split

from .artifacts import LoadedModel, save_artifact
from .dataset import LabeledData
from .drift import feature_values, reference_profile
from .evaluation import choose_threshold, evaluate
from .pipeline import build_pipeline

log = logging.getLogger(__name__)

SEED = 42
TEST_SIZE = 0.2  # held out: reported metrics come from here only
VALIDATION_SIZE = 0.2  # of what remains: the threshold is chosen here, never on the test split


def split(data: LabeledData, seed: int = SEED) -> dict[str, tuple[list[str], Any]]:
    """Stratified train / validation / test split, the same for every model trained with `seed`."""
    rest_x, test_x, rest_y, test_y = train_test_split(
        data.texts, data.labels, test_size=TEST_SIZE, stratify=data.labels, random_state=seed
    )
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=VALIDATION_SIZE, stratify=rest_y, random_state=seed
    )
    return {"train": (train_x, train_y), "validation": (val_x, val_y), "test": (test_x, test_y)}


def train_model(
    data: LabeledData,
    name: str,
    version: str,
    params: dict[str, Any],
    output_root: str | os.PathLike,
    threshold: float | None = None,
    preset: str | None = None,
    seed: int = SEED,
) -> dict[str, Any]:
    """Fit on the train split and save to `<output_root>/<name>/<version>/`; returns the manifest.

    `threshold=None` chooses it on the validation split (max macro-F1); a number is used as given.
    """
    started = time.perf_counter()
    parts = split(data, seed)
    pipeline = build_pipeline(params)
    pipeline.fit(*parts["train"])
    val_scores = pipeline.predict_proba(parts["validation"][0])[:, 1]
    chosen = choose_threshold(parts["validation"][1], val_scores) if threshold is None else float(threshold)
    test_scores = pipeline.predict_proba(parts["test"][0])[:, 1]
    # Drift reference: validation data is held out from fitting, so its scores look like live ones.
    val_texts = parts["validation"][0]
    normalised = pipeline.named_steps["normalise"].transform(val_texts)
    profile_model = LoadedModel(name, version, {"threshold": chosen}, Path(output_root), pipeline=pipeline)
    profile = reference_profile(feature_values(profile_model, val_texts, normalised, val_scores), "validation")
    manifest = {
        "name": name,
        "version": version,
        "threshold": chosen,
        "threshold_source": "validation macro-F1" if threshold is None else "given",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": preset,
        "params": params,
        "seed": seed,
        "metrics": {
            "test": evaluate(parts["test"][1], test_scores, chosen),
            "validation": evaluate(parts["validation"][1], val_scores, chosen),
        },
        "splits": {part: len(x) for part, (x, _) in parts.items()},
        "reference_profile": profile,
        "training_data": {"sha256": data.sha256, "rows": data.rows, "source": data.source},
        "training_seconds": round(time.perf_counter() - started, 2),
    }
    # The data-only scorer must reproduce predict_proba on the validation split, or no manifest is written.
    saved = save_artifact(pipeline, Path(output_root) / name / version, manifest, check_texts=val_texts)
    log.info("trained %s/%s: test ROC-AUC %s", name, version, saved["metrics"]["test"]["roc_auc"])
    return saved
