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

A model may declare categories (`hate`, `offensive`): one more logistic head each over the very
same x, so `category_scores` and `explain` cost one pass more, and only when asked. `explain` gives
each feature's exact share of the logit, `x_j * coef_j`: with the intercept they sum to the logit.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from .spans import track_normalised

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
        categories: tuple[str, ...] = (),
        category_coef: np.ndarray | None = None,
        category_intercept: np.ndarray | None = None,
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
        self.categories = tuple(categories)
        shape = (len(self.categories), len(terms))
        self.category_coef = np.zeros(shape) if category_coef is None else np.asarray(category_coef, dtype=np.float64)
        self.category_intercept = np.zeros(len(self.categories)) if category_intercept is None else category_intercept
        self.category_intercept = np.asarray(self.category_intercept, dtype=np.float64)
        if self.category_coef.shape != shape or self.category_intercept.shape != (len(self.categories),):
            raise ValueError(f"{len(self.categories)} categories need coefficients {shape} and as many intercepts")
        # The path that gives categories too, and explanations: one lookup per n-gram gives its idf,
        # coefficient and every category's coefficient (the plain path keeps its smaller table).
        self._full_weights = (
            {
                term: (*weights, *coefs)
                for (term, weights), coefs in zip(self._weights.items(), self.category_coef.T.tolist(), strict=True)
            }
            if self.categories
            else self._weights
        )

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

    def per_text_with_categories(self, normalised: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`per_text`'s scores and OOV rates (the same arithmetic, so the same numbers), and P(category)
        [texts, categories], from one pass over each text's n-grams with one lookup each."""
        scores, oov, rows = [], [], []
        weights, log, sqrt = self._full_weights, math.log, math.sqrt
        binary, sublinear, l2 = self.binary, self.sublinear, self.norm == "l2"
        intercepts, width = self.category_intercept.tolist(), len(self.categories)
        for text in normalised:
            tokens = self.analyze(text)
            known = 0
            dot = norm = 0.0
            entries = []
            for token, count in Counter(tokens).items():
                weight = weights.get(token)
                if weight is None:
                    continue
                known += count
                tf = 1.0 if binary else (1.0 + log(count) if sublinear else float(count))
                value = tf * weight[0]
                dot += value * weight[1]
                norm += value * value if l2 else abs(value)
                entries.append((value, weight))
            scale = 1.0
            if norm and self.norm:
                scale = 1.0 / (sqrt(norm) if l2 else norm)
                dot /= sqrt(norm) if l2 else norm
            logits = list(intercepts)
            for value, weight in entries:
                x = value * scale
                for index in range(width):
                    logits[index] += x * weight[index + 2]
            scores.append(_sigmoid(self.intercept + dot))
            oov.append(1.0 - known / len(tokens) if tokens else 1.0)
            rows.append([_sigmoid(logit) for logit in logits])
        return np.array(scores), np.array(oov), np.array(rows, dtype=np.float64).reshape(len(normalised), width)

    def category_scores(self, normalised: list[str]) -> np.ndarray:
        """P(category) for each text and category, [len(normalised), len(categories)]."""
        return self.per_text_with_categories(normalised)[2]

    def explain(self, raw: str, top: int) -> dict:
        """The score of `raw` taken apart: each known
        feature's contribution `x_j * coef_j` to the logit (and to each category's), with the raw
        span of its first occurrence, the `top` largest by size first. Exact: all contributions
        plus the intercept equal the logit that `per_text` turns into the score."""
        grams = self.analyze.spans(track_normalised(raw))
        values, first, _ = self._features([gram for gram, _, _ in grams], grams)
        contributions = []
        for term, x in values.items():
            weight = self._weights[term][1]
            start, end = first[term]
            contributions.append((abs(x * weight), term, x * weight, start, end, x))
        contributions.sort(key=lambda item: (-item[0], item[3], item[1]))
        explanation = [
            {
                "start": start,
                "end": end,
                "text": raw[start:end],
                "feature": term,
                "contribution": contribution,
                "categories": {
                    name: x * coef for name, coef in zip(self.categories, self._full_weights[term][2:], strict=True)
                },
            }
            for _, term, contribution, start, end, x in contributions[:top]
        ]
        logit = self.intercept + sum(item[2] for item in contributions)
        return {"logit": logit, "intercept": self.intercept, "explanation": explanation, "features": len(values)}

    def _features(self, tokens: list[str], spans=None) -> tuple[dict[str, float], dict, int]:
        """x_j for each known term of `tokens` (normalised like `per_text`), the first span of each
        (when `spans` are given), and how many tokens were known."""
        weights, log = self._weights, math.log
        counts = Counter(tokens)
        raw, known = {}, 0
        for token, count in counts.items():
            weight = weights.get(token)
            if weight is None:
                continue
            known += count
            tf = 1.0 if self.binary else (1.0 + log(count) if self.sublinear else float(count))
            raw[token] = tf * weight[0]
        if self.norm:
            norm = math.sqrt(sum(v * v for v in raw.values())) if self.norm == "l2" else sum(map(abs, raw.values()))
            if norm:
                raw = {token: value / norm for token, value in raw.items()}
        first: dict[str, tuple[int, int]] = {}
        for gram, start, end in spans or ():
            if gram in raw and gram not in first:
                first[gram] = (start, end)
        return raw, first, known


def _sigmoid(x: float) -> float:
    # scipy.special.expit, which sklearn's binary predict_proba uses, without scipy; exp never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _expit(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # <= 1: no overflow, no warning to silence
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
