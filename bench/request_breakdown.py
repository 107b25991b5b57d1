"""Per-request cost, component by component, before and after the performance work (microseconds).

    .venv/bin/python -m bench.request_breakdown

Each component is timed alone on realistic texts (median of repeats, µs per request); "before"
runs the code paths the service used before: sklearn predict_proba for one text, `limits`' generic
hit + get_window_stats (3 store round trips), numpy drift binning of one value.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import statistics
import tempfile
import time

import joblib
import limits
import pandas as pd
from limits.strategies import FixedWindowRateLimiter

from service import create_app
from service.core.schemas import PredictRequestSchema
from service.observability import metrics as service_metrics
from shared_features.drift import bin_counts, feature_values
from shared_features.text import normalize_text

from .common import DATASET, machine

N = 2000


def per_call(fn, items) -> float:
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for item in items:
            fn(item)
        runs.append((time.perf_counter() - started) / len(items) * 1e6)
    return statistics.median(runs)


def main() -> None:
    texts = [t for t in pd.read_csv(DATASET)["text"].sample(N, random_state=2) if len(t) <= 2000]
    store = f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3"
    app = create_app({"API_KEYS": "b:key-0123456789abcdef", "STORE_URL": store, "RATE_LIMIT": "1000000/second"})
    logging.getLogger().handlers[-1].stream = open(os.devnull, "w")  # noqa: SIM115 - formatting is measured
    service = app.extensions["toxiserve"]
    v1 = service.inference.models["v1"]
    v1_sklearn = joblib.load(v1.path / "model.joblib")  # the path before the data-only scorer
    normalised = [normalize_text(t) for t in texts]
    profile = v1.manifest["reference_profile"]["features"]
    client = app.test_client()
    headers = {"X-API-Key": "key-123"}
    bodies = [json.dumps({"text": t}).encode() for t in texts]
    item = limits.parse("1000000/second")
    generic = FixedWindowRateLimiter(service.store.limits)
    values = feature_values(v1, texts[:1], normalised[:1], [0.5], [0.1])
    schema = PredictRequestSchema()
    record = logging.LogRecord("toxiserve.request", logging.INFO, __file__, 0, "request", None, None)
    record.__dict__.update(
        {
            "route": "/v1/predict",
            "method": "POST",
            "status": 200,
            "latency_ms": 1.2,
            "model_version": "v1",
            "key_id": "b",
            "text_length": 80,
            "request_id": "x" * 32,
        }
    )
    formatter = logging.getLogger().handlers[-1].formatter

    rows = [
        (
            "model: one text",
            lambda i: v1_sklearn[1:].predict_proba([normalised[i]]),
            lambda i: v1.scorer.per_text([normalised[i]]),
        ),
        (
            "rate limit (embedded store)",
            lambda i: (generic.hit(item, "b", "k"), generic.get_window_stats(item, "b", "k")),
            lambda i: service.rate_limiter.check("b"),
        ),
        (
            "drift binning, one text",
            lambda i: [bin_counts(values[f], profile[f]["edges"]) for f in profile],
            lambda i: [bisect.bisect_left(profile[f]["edges"], float(values[f][0])) for f in profile],
        ),
    ]
    print(f"\nper-request costs in µs (median of 5 passes over {len(texts)} texts; {machine()})")
    print(f"{'component':34} {'before':>8} {'after':>8}")
    idx = range(len(texts))
    for name, before, after in rows:
        print(f"{name:34} {per_call(before, idx):>8.1f} {per_call(after, idx):>8.1f}")
    for name, fn in (
        ("JSON body + marshmallow schema", lambda i: schema.load(json.loads(bodies[i]))),
        ("normalise + screen", lambda i: service.inference.screen(texts[i])),
        ("request log line (JSON)", lambda i: formatter.format(record)),
        (
            "metrics (counter + histogram)",
            lambda i: (
                service_metrics.HTTP_REQUESTS.labels("/v1/predict", "POST", "200").inc(),
                service_metrics.HTTP_DURATION.labels("/v1/predict", "POST").observe(0.001),
            ),
        ),
        ("auth (sha256 + compare)", lambda i: service.api_keys.authenticate("key-123")),
    ):
        print(f"{name:34} {'':>8} {per_call(fn, idx):>8.1f}")
    whole = per_call(
        lambda i: client.post("/v1/predict", data=bodies[i], content_type="application/json", headers=headers), idx
    )
    print(f"{'whole request (Flask test client)':34} {'':>8} {whole:>8.1f}")


if __name__ == "__main__":
    main()
