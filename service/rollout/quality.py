"""Model quality from labels fed back: per-class precision, recall and F1, macro-F1 and accuracy,
each with a 95 % interval.

- Precision, recall and accuracy are proportions: Wilson score intervals (good at small counts and
  at 0 or 1, where the normal approximation is not).
- F1 and macro-F1 are not proportions: a percentile bootstrap of the confusion matrix (2,000
  multinomial resamples of the observed cells, seed 0, so the same counts give the same interval).
A value whose denominator is 0 is null, with a null interval: no evidence is not a score of 0.
An interval needs enough labels to mean anything: over 0 or 1 of them (Wilson), or fewer than
MIN_BOOTSTRAP_LABELS (bootstrap: resampling a handful of labels gives back nearly the same matrix,
and an interval like [0.0, 0.0] that looks certain), it is null with `"insufficient": true`.
The confusion matrix is `confusion[predicted][actual]`.
"""

from __future__ import annotations

import math

import numpy as np

LABELS = ("toxic", "clean")
Z_95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000
MIN_WILSON_LABELS = 2
MIN_BOOTSTRAP_LABELS = 20
INTERVALS = (
    "95 %: Wilson score for precision, recall and accuracy; "
    "percentile bootstrap of the confusion matrix (2,000 resamples) for F1 and macro-F1"
)


def wilson(successes: int, n: int, z: float = Z_95) -> list[float] | None:
    if n < MIN_WILSON_LABELS:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - spread), 6), round(min(1.0, centre + spread), 6)]


def _ratio(numerator: int, denominator: int) -> dict:
    value = round(numerator / denominator, 6) if denominator else None
    interval = wilson(numerator, denominator)
    return {"value": value, "interval": interval, "insufficient": interval is None, "n": denominator}


def _f1s(cells: np.ndarray) -> np.ndarray:
    """F1 of each class for confusion matrices [..., predicted, actual] (index 0 toxic, 1 clean); NaN if undefined."""
    f1 = []
    for k in (0, 1):
        tp = cells[..., k, k]
        fp = cells[..., k, 1 - k]
        fn = cells[..., 1 - k, k]
        denominator = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            f1.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), np.nan))
    return np.stack(f1, axis=-1)


def report(matrix: dict[str, dict[str, int]]) -> dict:
    """`matrix[predicted][actual]` counts -> the quality report."""
    cells = np.array([[matrix.get(p, {}).get(a, 0) for a in LABELS] for p in LABELS], dtype=np.int64)
    n = int(cells.sum())
    classes = {}
    f1 = _f1s(cells.astype(float))
    resampled = None
    if n >= MIN_BOOTSTRAP_LABELS:
        rng = np.random.default_rng(0)
        draws = rng.multinomial(n, (cells / n).ravel(), size=BOOTSTRAP_RESAMPLES).reshape(-1, 2, 2).astype(float)
        resampled = _f1s(draws)
    for k, label in enumerate(LABELS):
        tp = int(cells[k, k])
        f1_interval = None
        if resampled is not None and not math.isnan(f1[k]):
            column = resampled[:, k][~np.isnan(resampled[:, k])]
            f1_interval = [round(float(q), 6) for q in np.percentile(column, [2.5, 97.5])] if len(column) else None
        classes[label] = {
            "support": int(cells[:, k].sum()),
            "precision": _ratio(tp, int(cells[k, :].sum())),
            "recall": _ratio(tp, int(cells[:, k].sum())),
            "f1": {
                "value": None if math.isnan(f1[k]) else round(float(f1[k]), 6),
                "interval": f1_interval,
                "insufficient": f1_interval is None,
            },
        }
    macro = None if np.isnan(f1).any() else round(float(f1.mean()), 6)
    macro_interval = None
    if macro is not None and resampled is not None:
        means = resampled.mean(axis=1)  # NaN where a resample left a class's F1 undefined: dropped
        means = means[~np.isnan(means)]
        macro_interval = [round(float(q), 6) for q in np.percentile(means, [2.5, 97.5])] if len(means) else None
    return {
        "labels": n,
        "confusion": {p: dict(zip(LABELS, map(int, cells[i]), strict=True)) for i, p in enumerate(LABELS)},
        "confusion_axes": ["predicted", "actual"],  # confusion[predicted][actual]
        "accuracy": _ratio(int(np.trace(cells)), n),
        "classes": classes,
        "macro_f1": {"value": macro, "interval": macro_interval, "insufficient": macro_interval is None},
    }
