"""Classifier metrics at a threshold, and choosing a threshold on validation data."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

CLASS_NAMES = {0: "clean", 1: "toxic"}


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """ROC-AUC, per-class precision/recall/F1 and macro-F1 at `threshold`, rounded for the manifest."""
    predicted = (scores >= threshold).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=[0, 1], zero_division=0)
    per_class = {
        CLASS_NAMES[c]: {
            "precision": round(float(precision[c]), 4),
            "recall": round(float(recall[c]), 4),
            "f1": round(float(f1[c]), 4),
            "support": int(support[c]),
        }
        for c in (0, 1)
    }
    both = len(np.unique(labels)) == 2  # ROC-AUC needs both classes (an all-toxic source has none)
    return {
        "roc_auc": round(float(roc_auc_score(labels, scores)), 4) if both else None,
        "macro_f1": round(float(f1.mean()), 4),
        "threshold": threshold,
        "classes": per_class,
    }


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, grid: np.ndarray | None = None, sample_weight: np.ndarray | None = None
) -> float:
    """The threshold on a 0.01 grid that maximises (weighted) macro-F1 (ties: the one nearest 0.5)."""
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2) if grid is None else grid

    def quality(t: float) -> tuple[float, float]:
        predicted = (scores >= t).astype(int)
        return f1_score(labels, predicted, average="macro", sample_weight=sample_weight), -abs(t - 0.5)

    return float(max(grid, key=quality))
