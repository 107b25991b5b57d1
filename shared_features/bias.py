"""Bias metrics per identity group: subgroup AUC, BPSN AUC and BNSP AUC (Borkan et al. 2019).

For a group g, split the examples into those that mention g (the subgroup) and the rest (the
background):
- subgroup AUC: ROC-AUC on the subgroup alone (can the model separate toxic from clean when g is
  named?);
- BPSN AUC (background positive, subgroup negative): on the background's toxic and the
  subgroup's clean examples. Low means clean texts that name g score above toxic texts that do
  not: false positives driven by g;
- BNSP AUC (background negative, subgroup positive): on the subgroup's toxic and the background's
  clean examples. Low means toxic texts that name g score below clean texts: misses driven by g.

A group's terms come from `models/toxicity/eval/identity_terms.json` and match as whole words
(or phrases) in the normalised text.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np

from .layout import DEFAULT_MODEL_ROOT
from .text import normalize_texts

IDENTITY_TERMS_FILE = DEFAULT_MODEL_ROOT / "toxicity" / "eval" / "identity_terms.json"
MIN_EXAMPLES = 50  # a group with fewer examples mentioning it is reported, not judged


@cache
def identity_groups(path: str = str(IDENTITY_TERMS_FILE)) -> dict[str, re.Pattern]:
    groups = json.loads(Path(path).read_text(encoding="utf-8"))["groups"]
    patterns = {}
    for name, terms in groups.items():
        alternatives = "|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True))
        patterns[name] = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")
    return patterns


def mentions(texts: list[str], path: str = str(IDENTITY_TERMS_FILE)) -> dict[str, np.ndarray]:
    """For each group, a boolean per text: does it name the group?"""
    normalised = normalize_texts(texts)
    return {
        name: np.fromiter((bool(p.search(t)) for t in normalised), bool, len(normalised))
        for name, p in identity_groups(path).items()
    }


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """scikit-learn's ROC-AUC (ties count half), or None without both classes."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def bias_metrics(labels, scores, groups: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per group: examples, toxic share, and the three AUCs (None where a set lacks a class)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    report = {}
    for name, inside in groups.items():
        outside = ~inside
        bpsn = (outside & (labels == 1)) | (inside & (labels == 0))
        bnsp = (outside & (labels == 0)) | (inside & (labels == 1))
        count = int(inside.sum())
        report[name] = {
            "examples": count,
            "toxic": int(labels[inside].sum()),
            "subgroup_auc": _round(_auc(labels[inside], scores[inside])),
            "bpsn_auc": _round(_auc(labels[bpsn], scores[bpsn])),
            "bnsp_auc": _round(_auc(labels[bnsp], scores[bnsp])),
            "judged": count >= MIN_EXAMPLES,
        }
    return report


def worst(report: dict[str, dict], metric: str) -> tuple[str | None, float | None]:
    """The judged group with the lowest value of `metric`."""
    judged = [
        (values[metric], name) for name, values in report.items() if values["judged"] and values[metric] is not None
    ]
    if not judged:
        return None, None
    value, name = min(judged)
    return name, value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
