"""Scoring paths by batch size: per-text and vectorised (the data-only scorer) vs scikit-learn.

    .venv/bin/python -m bench.scorer_bench

For each shipped model and batch size, the median microseconds per text of:
- `per_text`: the data-only scorer, plain Python per text (what small service requests take);
- `vectorised`: the data-only scorer, numpy over the whole batch (big requests, the batch job);
- `sklearn`: the pickled pipeline's own steps after normalisation (`pipeline[1:].predict_proba`),
  the path the service and the batch job took before the data-only scorer.
Texts are real dataset rows, normalised once beforehand (every path gets normalised text). The
crossover (first size where vectorised beats per-text) is what `PER_TEXT_MAX_BATCH` encodes.

First, the hot path's bound: each version's one-text cost (`per_text`, one text per call, over
the same texts) against v1's, in interleaved rounds of one run, as the median of the rounds'
ratios. v3's must stay at or below 2x v1's (`--hot-path-only` prints just this).
"""

from __future__ import annotations

import argparse
import statistics
import time

import joblib
import pandas as pd

from shared_features import ModelRegistry
from shared_features.text import normalize_texts

from .common import DATASET, machine

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 20_000)


def per_text_us(fn, texts: list[str], budget: float) -> float:
    """Median over repeated calls (at least 5, about `budget` seconds) of microseconds per text."""
    samples, spent = [], 0.0
    while len(samples) < 5 or (spent < budget and len(samples) < 200):
        started = time.perf_counter()
        fn(texts)
        elapsed = time.perf_counter() - started
        samples.append(elapsed / len(texts) * 1e6)
        spent += elapsed
    return statistics.median(samples)


HOT_PATH_BOUND = 2.0  # v3's one-text cost over v1's (issue: a model people can trust)


def hot_path(registry, texts: list[str], versions: list[str], rounds: int) -> dict[str, float]:
    """Median over interleaved rounds of each version's µs per text, one text per call; and the
    median of the per-round ratios to v1 (a ratio within one round cancels the machine's drift)."""
    models = {version: registry.load("toxicity", version) for version in versions}
    sample = texts[:2000]
    timings: dict[str, list[float]] = {version: [] for version in versions}
    for _ in range(rounds):
        for version, model in models.items():
            score = model.scorer.per_text
            started = time.perf_counter()
            for text in sample:
                score([text])
            timings[version].append((time.perf_counter() - started) / len(sample) * 1e6)
    print("\n## hot path: one text per call, µs per text (median of rounds), and the ratio to v1")
    print("| version | µs per text | / v1 |")
    print("|---|---|---|")
    ratios = {}
    for version in versions:
        ratios[version] = statistics.median(t / b for t, b in zip(timings[version], timings["v1"], strict=True))
        print(f"| {version} | {statistics.median(timings[version]):.1f} | {ratios[version]:.2f} |")
    if "v3" in ratios:
        verdict = "within" if ratios["v3"] <= HOT_PATH_BOUND else "ABOVE"
        print(f"v3 / v1 = {ratios['v3']:.2f}: {verdict} the bound of {HOT_PATH_BOUND:g}x")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=0.4, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds of the hot-path comparison")
    parser.add_argument("--hot-path-only", action="store_true", help="only the hot path against v1")
    args = parser.parse_args()
    # A random sample, so small batches are typical tweets rather than the file's first rows.
    texts = normalize_texts(pd.read_csv(DATASET)["text"].sample(frac=1.0, random_state=0).tolist())
    registry = ModelRegistry()
    print(f"# {machine()}; median µs per text")
    versions = registry.versions("toxicity")
    hot_path(registry, texts, versions, args.rounds)
    if args.hot_path_only:
        return
    for version in versions:
        model = registry.load("toxicity", version)
        sklearn_steps = joblib.load(model.path / "model.joblib")[1:]
        paths = {
            "per_text": model.scorer.per_text,
            "vectorised": model.scorer.vectorised,
            "sklearn": lambda batch, steps=sklearn_steps: steps.predict_proba(batch),
        }
        print(f"\n## {version} ({model.scorer.analyze.name}; per-text up to {model.per_text_max_batch} texts)")
        print("| texts | " + " | ".join(paths) + " | vectorised / per_text | sklearn / best |")
        print("|---|" + "---|" * (len(paths) + 2))
        crossover = None
        for size in SIZES:
            batch = texts[:size]
            us = {name: per_text_us(fn, batch, args.budget) for name, fn in paths.items()}
            ratio = us["vectorised"] / us["per_text"]
            if crossover is None and ratio < 1:
                crossover = size
            best = min(us["per_text"], us["vectorised"])
            cells = " | ".join(f"{value:.1f}" for value in us.values())
            print(f"| {size} | {cells} | {ratio:.2f} | {us['sklearn'] / best:.2f} |")
        print(f"crossover: vectorised is faster from {crossover} texts")


if __name__ == "__main__":
    main()
