"""Category heads: one binary logistic regression per category (`hate`, `offensive`) over the very
features the overall head reads, so the data-only scorer serves them from the same x (exact to
1e-12, checked like the overall score) and an explanation can split each feature's share by category.

Each head trains on the training rows whose source labels that category (the spec's `categories`,
the functional suite's own), with their sample weights; its threshold is chosen like the overall
one, on the validation rows of the sources that label it, each source weighing the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .evaluation import choose_threshold, evaluate
from .sources import UNKNOWN, SourceData

# What each category means (the label definition's words); the manifest and the API say it.
DESCRIPTIONS = {
    "hate": "an attack on a protected group: derogation, dehumanisation, slurs or threats",
    "offensive": "insults and profanity aimed at a person",
}


def category_names(datas: list[SourceData]) -> list[str]:
    """Every category a training source labels, in the order the spec first names them."""
    names: list[str] = []
    for data in datas:
        if data.source.use == "train":
            names += [name for name in data.categories if name not in names]
    return names


def fit_heads(
    pipeline, params: dict[str, Any], texts: list[str], weights: np.ndarray, labels: dict[str, np.ndarray]
) -> dict[str, Any]:
    """{category: LogisticRegression} fitted on the pipeline's TF-IDF features of the rows that
    category is known for, with the overall head's classifier settings."""
    from sklearn.linear_model import LogisticRegression

    features = pipeline[:-1].transform(texts)
    settings = {"random_state": 0, **params.get("classifier", {})}
    heads = {}
    for name, known in labels.items():
        rows = np.flatnonzero(known != UNKNOWN)
        if len(np.unique(known[rows])) < 2:
            raise ValueError(f"category {name!r}: its training rows need both positive and negative examples")
        heads[name] = LogisticRegression(**settings).fit(features[rows], known[rows], sample_weight=weights[rows])
    return heads


def category_report(pipeline, heads: dict[str, Any], datas: list[SourceData]) -> tuple[dict, dict]:
    """(manifest `categories`: {name: threshold, description, training rows}, metrics per category
    and source on its held-out parts at that threshold)."""
    declared, metrics = {}, {}
    for name, head in heads.items():
        scored: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for data in datas:
            if name not in data.categories:
                continue
            for part in ("validation", "test") if data.source.use == "train" else ("all",):
                texts = data.part(part)[0]
                known, labels = data.category_part(part, name)
                if len(known):
                    features = pipeline[:-1].transform([texts[i] for i in known])
                    scored[data.source.name, part] = (labels, head.predict_proba(features)[:, 1])
        validation = [value for (_, part), value in scored.items() if part == "validation"]
        threshold = 0.5
        if validation:
            labels = np.concatenate([value[0] for value in validation])
            scores = np.concatenate([value[1] for value in validation])
            weights = np.concatenate([np.full(len(value[0]), 1.0 / len(value[0])) for value in validation])
            threshold = choose_threshold(labels, scores, sample_weight=weights)
        declared[name] = {
            "threshold": threshold,
            "threshold_source": "validation macro-F1" if validation else "default",
            "description": DESCRIPTIONS.get(name),
        }
        metrics[name] = {
            source: {("test" if part == "all" else part): evaluate(*value, threshold)}
            for (source, part), value in scored.items()
            if part != "validation"
        }
    return declared, metrics
