"""Drift: a reference profile of inputs and outputs at training time, PSI of live data against it.

Features: text length (characters), out-of-vocabulary token rate (the model's own analyzer and
vocabulary), and the score. Each is binned at the reference deciles; the population stability
index compares live bin shares with the reference's. Rule of thumb: < 0.1 stable, 0.1-0.25 a
shift worth a look, > 0.25 a major shift.

One PSI formula serves everything: `psi` here, the rollout's score guardrail, `batchjob drift`, the
service's report and the Prometheus recording rule (deploy/prometheus/alerts.yml), which computes it
over a recent window from the bin counters and `drift_reference_share` (`smoothed_shares`).
"""

from __future__ import annotations

import numpy as np

from .artifacts import LoadedModel

FEATURES = ("text_length", "oov_rate", "score")
DEFAULT_PSI_THRESHOLD = 0.2
MIN_SAMPLES = 100  # below this a PSI is noise: reported as null
# Added to every bin's count before shares are taken, so an empty bin gives a large but finite PSI
# (no log of 0), and a bin's weight fades as counts grow.
PSI_SMOOTHING = 0.5


def oov_rates(model: LoadedModel, normalised: list[str]) -> np.ndarray:
    """Share of each text's analyzer tokens (word or char n-grams) missing from the vocabulary."""
    if model.scorer is not None:
        return model.scorer.vectorised(normalised)[1]
    vectorizer = model.pipeline.named_steps.get("tfidf") if hasattr(model.pipeline, "named_steps") else None
    if vectorizer is None:
        return np.zeros(len(normalised))
    analyze, vocabulary = vectorizer.build_analyzer(), vectorizer.vocabulary_
    rates = np.empty(len(normalised))
    for index, text in enumerate(normalised):
        tokens = analyze(text)
        rates[index] = sum(token not in vocabulary for token in tokens) / len(tokens) if tokens else 1.0
    return rates


def feature_values(model: LoadedModel, raw: list[str], normalised: list[str], scores, oov=None) -> dict:
    """`oov`: rates already computed (the compiled scorer returns them), else derived here."""
    return {
        "text_length": np.fromiter((len(text) for text in raw), dtype=np.float64, count=len(raw)),
        "oov_rate": oov_rates(model, normalised) if oov is None else np.asarray(oov, dtype=np.float64),
        "score": np.asarray(scores, dtype=np.float64),
    }


def bin_index(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin i holds edges[i-1] < v <= edges[i]; len(edges) + 1 bins."""
    return np.searchsorted(np.asarray(edges), values, side="left")


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.bincount(bin_index(values, edges), minlength=len(edges) + 1)


def reference_profile(values: dict[str, np.ndarray], sample: str, bins: int = 10) -> dict:
    """Decile edges (deduplicated: OOV rates pile up at 0) and the reference share of each bin."""
    features = {}
    for name in FEATURES:
        column = values[name]
        edges = sorted(set(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]).round(6).tolist()))
        counts = bin_counts(column, edges)
        features[name] = {"edges": edges, "expected": (counts / counts.sum()).round(6).tolist()}
    return {"sample": sample, "rows": int(len(values["score"])), "features": features}


def smoothed_shares(counts) -> np.ndarray:
    """A histogram's bin shares, each bin's count plus PSI_SMOOTHING."""
    smoothed = np.asarray(counts, dtype=float) + PSI_SMOOTHING
    return smoothed / smoothed.sum()


def psi(actual, expected) -> float:
    """Population stability index of two histograms of counts over the same bins."""
    a, e = smoothed_shares(actual), smoothed_shares(expected)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_counts(profile: dict, feature: str) -> np.ndarray:
    """A feature's training histogram as counts (its shares times the rows profiled)."""
    return np.asarray(profile["features"][feature]["expected"], dtype=float) * profile["rows"]


def drift_report(profile: dict, counts: dict[str, list[float]], threshold: float = DEFAULT_PSI_THRESHOLD) -> dict:
    """The same report for the service's live counts and for `batchjob drift` over a file."""
    features = {}
    samples = 0
    for name, reference in profile["features"].items():
        observed = list(counts.get(name, [0] * len(reference["expected"])))
        samples = max(samples, int(sum(observed)))
        value = round(psi(observed, reference_counts(profile, name)), 6) if sum(observed) >= MIN_SAMPLES else None
        total = sum(observed) or 1
        features[name] = {
            "psi": value,
            "drifted": value is not None and value > threshold,
            "edges": reference["edges"],
            "expected": reference["expected"],
            "actual": [round(c / total, 6) for c in observed],
            "counts": [int(c) for c in observed],
        }
    drifted = any(f["drifted"] for f in features.values())
    # "insufficient": too few samples for a PSI to mean anything, so "drifted": false says nothing
    status = "insufficient" if samples < MIN_SAMPLES else "drifted" if drifted else "stable"
    return {
        "samples": samples,
        "min_samples": MIN_SAMPLES,
        "threshold": threshold,
        "status": status,
        "drifted": drifted,
        "features": features,
    }


def profile_counts(model: LoadedModel, values: list, max_chars: int) -> tuple[dict[str, np.ndarray], int]:
    """Bin counts per feature for the scorable values (and how many were not scorable)."""
    from .text import screen_text

    raw, normalised = [], []
    for value in values:
        clean, reason = screen_text(value, max_chars)
        if reason is None:
            raw.append(value)
            normalised.append(clean)
    profile = model.manifest["reference_profile"]["features"]
    counts = {name: np.zeros(len(profile[name]["edges"]) + 1, dtype=np.int64) for name in FEATURES}
    if raw:
        observed = feature_values(model, raw, normalised, model.score_normalised(normalised, raw))
        for name in FEATURES:
            counts[name] += bin_counts(observed[name], profile[name]["edges"])
    return counts, len(values) - len(raw)
