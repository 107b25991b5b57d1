"""Training: one or several sources, each with its own held-out split; fit, choose the threshold on
validation data, evaluate per source, write the artifact.

Rules that keep the reported figures honest:
- a source's test rows depend on that source alone (its split column, or a seeded split), so they
  are the same for every model trained with the same seed, whatever other sources it used;
- no training row may equal (after normalisation) an evaluation row of anything else: another
  source's validation or test rows, an evaluation-only source, or the held-out half of the
  functional suite (a source's own split is its own, as published: v1 and v2 retrain exactly);
- the threshold is chosen on validation rows only, each source weighing the same.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import LoadedModel, save_artifact
from .category_heads import category_names, category_report, fit_heads
from .dataset import LabeledData
from .drift import feature_values, reference_profile
from .evaluation import choose_threshold, evaluate
from .pipeline import build_pipeline
from .sources import UNKNOWN, Source, SourceData, combined_sha256, seeded_split
from .text import normalize_texts

log = logging.getLogger(__name__)

SEED = 42
TEST_SIZE = 0.2  # held out: reported metrics come from here only
VALIDATION_SIZE = 0.2  # of what remains: the threshold is chosen here, never on the test split


def split(data: LabeledData, seed: int = SEED) -> dict[str, tuple[list[str], Any]]:
    """Stratified train / validation / test split, the same for every model trained with `seed`."""
    as_source = as_source_data(data, seed)
    return {name: as_source.part(name) for name in ("train", "validation", "test")}


def as_source_data(data: LabeledData, seed: int = SEED) -> SourceData:
    """One labeled file as a source, split as v1 and v2 were (stratified test, then validation)."""
    parts = seeded_split(np.asarray(data.labels), seed, TEST_SIZE, VALIDATION_SIZE)
    return SourceData(
        Source(data.source, path=data.source), list(data.texts), np.asarray(data.labels), parts, data.sha256
    )


def training_rows(
    datas: list[SourceData], excluded: dict[str, set[str]], seed: int
) -> tuple[list, np.ndarray, np.ndarray, dict, dict[str, np.ndarray]]:
    """The rows to fit on: each training source's train rows, without any row whose normalised text
    is an evaluation row or an earlier training row of another source, capped; with sample weights,
    and each row's label per category (UNKNOWN where its source gives none)."""
    rng = np.random.default_rng(seed)
    names = category_names(datas)
    texts: list[str] = []
    labels: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    categories: dict[str, list[np.ndarray]] = {name: [] for name in names}
    taken: set[str] = set()
    report: dict[str, dict] = {}
    for data in datas:
        if data.source.use != "train":
            continue
        part_texts, part_labels = data.part("train")
        keys = normalize_texts(part_texts)
        keep, overlap, duplicate = [], 0, 0
        own: set[str] = set()
        for index, key in enumerate(keys):
            owners = excluded.get(key)
            if owners and (len(owners) > 1 or data.source.name not in owners):
                overlap += 1
            elif key in taken:
                duplicate += 1  # already a training row of an earlier source
            else:
                keep.append(index)
                own.add(key)
        taken |= own
        if data.source.cap is not None and len(keep) > data.source.cap:
            keep = sorted(rng.choice(keep, size=data.source.cap, replace=False).tolist())
        kept_labels = part_labels[keep]
        train_index = np.flatnonzero(data.split == "train")[keep]
        for category in names:
            known = data.categories.get(category)
            categories[category].append(known[train_index] if known is not None else np.full(len(keep), UNKNOWN))
        texts.extend(part_texts[i] for i in keep)
        labels.append(kept_labels)
        weights.append(np.full(len(keep), data.source.weight))
        report[data.source.name] = {
            "rows_used": {"toxic": int(kept_labels.sum()), "clean": int(len(keep) - kept_labels.sum())},
            "dropped_as_evaluation_rows": overlap,
            "dropped_as_duplicates_of_other_sources": duplicate,
        }
    weight = np.concatenate(weights)
    per_category = {name: np.concatenate(parts) for name, parts in categories.items()}
    return texts, np.concatenate(labels), weight / weight.mean(), report, per_category


FUNCTIONAL_HELD_OUT = "functional (held-out half)"


def evaluation_keys(datas: list[SourceData]) -> dict[str, set[str]]:
    """Each normalised evaluation text, with the names of the sources it is evaluated in."""
    from .functional import generate

    owners: dict[str, set[str]] = {}

    def add(name: str, texts: list[str]) -> None:
        for key in normalize_texts(texts):
            owners.setdefault(key, set()).add(name)

    add(FUNCTIONAL_HELD_OUT, [case.text for case in generate("heldout")])
    for data in datas:
        if data.source.use == "eval":
            add(data.source.name, data.texts)
        else:
            add(data.source.name, data.part("validation")[0] + data.part("test")[0])
    return owners


def _held_out_parts(data: SourceData) -> tuple[str, ...]:
    """The parts a source reports: validation and test for a training source, all rows for an eval one."""
    return ("validation", "test") if data.source.use == "train" else ("all",)


def _part(data: SourceData, part: str) -> tuple[list[str], np.ndarray]:
    return (data.texts, data.labels) if part == "all" else data.part(part)


def _pooled(datas: list[SourceData], part: str, scored: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every training source's `part` (labels, scores), weighted so that each source counts the same."""
    labels, scores, weights = [], [], []
    for data in datas:
        if data.source.use != "train" or (data.source.name, part) not in scored:
            continue
        part_labels, part_scores = scored[data.source.name, part]
        labels.append(part_labels)
        scores.append(part_scores)
        weights.append(np.full(len(part_labels), 1.0 / len(part_labels)))
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(labels), np.concatenate(scores), np.concatenate(weights)


def train_sources(
    datas: list[SourceData],
    name: str,
    version: str,
    params: dict[str, Any],
    output_root: str | os.PathLike,
    threshold: float | None = None,
    preset: str | None = None,
    seed: int = SEED,
    progress=None,
) -> dict[str, Any]:
    """Fit on the training sources' train rows and save to `<output_root>/<name>/<version>/`.

    `threshold=None` chooses it on the pooled validation rows (max macro-F1, each source weighing
    the same); a number is used as given. `progress(message)` hears each stage."""
    say = progress or (lambda message: None)
    started = time.perf_counter()
    if not any(data.source.use == "train" for data in datas):
        raise ValueError("no source is for training")
    say(f"{len(datas)} sources read; removing evaluation rows and duplicates from the training rows")
    train_x, train_y, train_w, used, train_categories = training_rows(datas, evaluation_keys(datas), seed)
    say(f"fitting on {len(train_x)} rows")
    pipeline = build_pipeline(params)
    pipeline.fit(train_x, train_y, clf__sample_weight=train_w)
    heads = {}
    if train_categories:
        say(f"fitting the category heads {', '.join(train_categories)} on the same features")
        heads = fit_heads(pipeline, params, train_x, train_w, train_categories)
    say("scoring every held-out row and choosing the threshold on the validation rows")
    scored: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # each held-out part scored once
    held_out: list[str] = []
    for data in datas:
        for part in _held_out_parts(data):
            texts, labels = _part(data, part)
            if texts:
                scored[data.source.name, part] = (labels, pipeline.predict_proba(texts)[:, 1])
                held_out.extend(texts)
    val_y, val_scores, val_w = _pooled(datas, "validation", scored)
    test_y, test_scores, _ = _pooled(datas, "test", scored)
    chosen = choose_threshold(val_y, val_scores, sample_weight=val_w) if threshold is None else float(threshold)
    per_source = {
        data.source.name: {
            ("test" if part == "all" else part): evaluate(*scored[data.source.name, part], chosen)
            for part in _held_out_parts(data)
            if (data.source.name, part) in scored
        }
        for data in datas
    }
    # Drift reference: validation data is held out from fitting, so its scores look like live ones.
    val_x = [text for data in datas if data.source.use == "train" for text in data.part("validation")[0]]
    normalised = normalize_texts(val_x)
    profile_model = LoadedModel(name, version, {"threshold": chosen}, Path(output_root), pipeline=pipeline)
    profile = reference_profile(feature_values(profile_model, val_x, normalised, val_scores), "validation")
    single = len(datas) == 1
    sources = []
    for data in datas:
        entry = {**data.source.describe(), "sha256": data.sha256, "rows": len(data.texts)}
        entry["splits"] = {part: int((data.split == part).sum()) for part in ("train", "validation", "test")}
        entry.update(used.get(data.source.name, {"rows_used": {"toxic": 0, "clean": 0}}))
        sources.append(entry)
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
            "test": evaluate(test_y, test_scores, chosen) if len(test_y) else None,
            "validation": evaluate(val_y, val_scores, chosen),
            "sources": per_source,
        },
        "splits": {"train": len(train_x), "validation": len(val_y), "test": len(test_y)},
        "reference_profile": profile,
        "training_data": {
            "sha256": datas[0].sha256 if single else combined_sha256(datas),
            "rows": len(datas[0].texts) if single else len(train_x),
            "source": datas[0].source.name if single else "+".join(d.source.name for d in datas),
            "sources": sources,
        },
    }
    if heads:
        manifest["categories"], manifest["metrics"]["categories"] = category_report(pipeline, heads, datas)
    manifest["training_seconds"] = round(time.perf_counter() - started, 2)
    say(f"checking the data-only scorer against predict_proba on {len(held_out)} held-out rows")
    # The data-only scorer must reproduce predict_proba on every held-out row, or no manifest is written.
    saved = save_artifact(pipeline, Path(output_root) / name / version, manifest, check_texts=held_out, heads=heads)
    log.info("trained %s/%s: test ROC-AUC %s", name, version, (saved["metrics"]["test"] or {}).get("roc_auc"))
    return saved


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
    """One labeled file: the same as a one-source spec (the split v1 and v2 were trained with)."""
    return train_sources([as_source_data(data, seed)], name, version, params, output_root, threshold, preset, seed)
