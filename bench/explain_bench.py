"""What categories and explanations cost per request, against v1's plain path, in one run (#26).

    .venv/bin/python -m bench.explain_bench [--requests 400] [--rounds 7]

The whole request through the Flask test client (auth, limits, idempotency, metrics, log line,
drift: everything on), on real tweets, for each variant in turn, round after round; each figure is
the median over rounds of µs per request. The bars: v3's plain path at most 1.10x v1's, and an
explained request (top 5 and categories) at most 3x a plain one. Writes docs/performance/explain.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

import pandas as pd

from service import create_app

from .common import DATASET, DOCS_RESULTS, machine, markdown_table

KEY = "bench-key-0123456789"
VARIANTS = {  # name: (route, extra body fields)
    "v1 plain": ("/v1/models/v1/predict", {}),
    "v3 plain": ("/v1/models/v3/predict", {}),
    "v3 categories": ("/v1/models/v3/predict", {"categories": True}),
    "v3 explained (top 5 + categories)": ("/v1/models/v3/predict", {"categories": True, "explain": True}),
}
BARS = {("v3 plain", "v1 plain"): 1.10, ("v3 explained (top 5 + categories)", "v3 plain"): 3.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per variant per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    texts = [t for t in pd.read_csv(DATASET)["text"].sample(args.requests, random_state=3) if len(t) <= 2000]
    config = {
        "API_KEYS": f"bench:{KEY}",
        "STORE_URL": f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3",
        "RATE_LIMIT": "1000000/second",
        "STABLE_VERSION": "v3",
        "CANARY_VERSION": "v1",
        "CANARY_PERCENT": 0.0,
    }
    app = create_app(config)
    logging.getLogger().handlers[-1].stream = open(os.devnull, "w")  # noqa: SIM115 - formatting is measured
    client = app.test_client()
    headers = {"X-API-Key": KEY}
    for route, extra in VARIANTS.values():  # warm every path once
        assert client.post(route, json={"text": texts[0], **extra}, headers=headers).status_code == 200
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (route, extra) in VARIANTS.items():
            started = time.perf_counter()
            for text in texts:
                client.post(route, json={"text": text, **extra}, headers=headers)
            samples[name].append((time.perf_counter() - started) / len(texts) * 1e6)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["v1 plain"]
    rows = [[name, f"{us:.0f}", f"{us / base:.2f}x"] for name, us in medians.items()]
    table = markdown_table(["request", "µs per request (median)", "vs v1 plain"], rows, text_columns=1)
    verdicts = []
    for (numerator, denominator), bound in BARS.items():
        ratio = medians[numerator] / medians[denominator]
        verdicts.append(f"- {numerator} / {denominator}: **{ratio:.2f}x** (bar: at most {bound:g}x): "
                        f"{'met' if ratio <= bound else 'NOT met'}")  # fmt: skip
    report = "\n".join(
        [
            "# Categories and explanations: cost per request",
            "",
            f"`python -m bench.explain_bench --requests {args.requests} --rounds {args.rounds}` on {machine()}: "
            f"{len(texts)} Davidson tweets per variant per round, the whole request through the Flask test "
            "client with everything on; medians over rounds.",
            "",
            table,
            "",
            *verdicts,
            "",
        ]
    )
    print(report)
    DOCS_RESULTS.mkdir(exist_ok=True)
    (DOCS_RESULTS / "explain.md").write_text(report)


if __name__ == "__main__":
    main()
