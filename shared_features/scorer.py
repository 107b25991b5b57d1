"""LinearScorer: TF-IDF + binary logistic regression from plain arrays, with numpy alone.

It computes exactly what the fitted scikit-learn pipeline computes (to ~1e-16; training checks
1e-12), from the arrays a data-only artifact holds:

    tf_j    = 1 + log(count_j) if sublinear else count_j      (1 if binary)
    x_j     = tf_j * idf_j, then divided by the l2 (or l1) norm of x
    P(toxic)= 1 / (1 + exp(-(intercept + sum_j x_j * coef_j)))

The analyzer is one of ours (`tokenizers.py`), so tokens are made by the same code at training.
Two paths over the same arrays, chosen by batch size:
- `per_text`: plain Python over each text's distinct n-grams; no per-call numpy overhead, so it is
  the fastest for one text and small batches;
- `vectorised`: all texts' n-gram columns at once through np.unique and np.bincount; faster for
  big batches (the crossover is measured by `bench/scorer_bench.py`).
Both return the OOV rate per text as well: drift monitoring needs it and it comes free.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

NORMS = ("l2", "l1", None)


class LinearScorer:
    def __init__(
        self,
        analyzer,
        terms: list[str],
        idf: np.ndarray,
        coef: np.ndarray,
        intercept: float,
        sublinear: bool,
        binary: bool,
        norm: str | None,
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        if not len(terms) == len(idf) == len(coef):
            raise ValueError(f"{len(terms)} terms, {len(idf)} idf values and {len(coef)} coefficients")
        self.analyze = analyzer
        self.terms = terms
        self.vocabulary = dict(zip(terms, range(len(terms)), strict=True))
        if len(self.vocabulary) != len(terms):
            raise ValueError("the vocabulary holds duplicate terms")
        self.idf = np.ascontiguousarray(idf, dtype=np.float64)
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.sublinear, self.binary, self.norm = bool(sublinear), bool(binary), norm
        # The per-text path: one dict lookup per n-gram gives both Python floats (numpy scalars and
        # a second lookup would cost more than the arithmetic).
        self._weights = dict(zip(terms, zip(self.idf.tolist(), self.coef.tolist(), strict=True), strict=True))

    def per_text(self, normalised: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # Python floats throughout, one array each at the end: numpy's per-call costs (errstate, small
        # arrays) were a third of scoring one text.
        scores, oov = [], []
        weights, log = self._weights, math.log
        binary, sublinear, l2 = self.binary, self.sublinear, self.norm == "l2"
        for text in normalised:
            tokens = self.analyze(text)
            known = 0
            dot = norm = 0.0
            for token, count in Counter(tokens).items():
                weight = weights.get(token)
                if weight is None:
                    continue
                known += count
                tf = 1.0 if binary else (1.0 + log(count) if sublinear else float(count))
                value = tf * weight[0]
                dot += value * weight[1]
                norm += value * value if l2 else abs(value)
            if norm and self.norm:
                dot /= math.sqrt(norm) if l2 else norm
            scores.append(_sigmoid(self.intercept + dot))
            oov.append(1.0 - known / len(tokens) if tokens else 1.0)
        return np.array(scores), np.array(oov)

    def vectorised(self, normalised: list[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = len(normalised)
        lookup = self.vocabulary.get
        columns: list[int] = []
        known = np.empty(rows, dtype=np.int64)
        lengths = np.empty(rows, dtype=np.int64)
        for index, text in enumerate(normalised):
            tokens = self.analyze(text)
            found = [column for column in map(lookup, tokens) if column is not None]
            columns.extend(found)
            known[index], lengths[index] = len(found), len(tokens)
        row_of = np.repeat(np.arange(rows, dtype=np.int64), known)
        keys, counts = np.unique(row_of * len(self.terms) + np.asarray(columns, dtype=np.int64), return_counts=True)
        row, column = np.divmod(keys, len(self.terms))
        if self.binary:
            tf = np.ones(len(counts))
        else:
            tf = np.log(counts) + 1.0 if self.sublinear else counts.astype(np.float64)
        values = tf * self.idf[column]
        dot = np.bincount(row, values * self.coef[column], minlength=rows)
        if self.norm:
            norm = np.bincount(row, values * values if self.norm == "l2" else np.abs(values), minlength=rows)
            norm = np.sqrt(norm) if self.norm == "l2" else norm
            dot = np.divide(dot, norm, out=np.zeros(rows), where=norm > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            oov = np.where(lengths > 0, 1.0 - known / np.maximum(lengths, 1), 1.0)
        return _expit(self.intercept + dot), oov


def _sigmoid(x: float) -> float:
    # scipy.special.expit, which sklearn's binary predict_proba uses, without scipy; exp never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _expit(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # <= 1: no overflow, no warning to silence
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
