"""Per-request cost, step by step, measured inside the whole request (microseconds).

    .venv/bin/python -m bench.request_breakdown [--route /v1/predict|/predict]

A `POST /v1/predict` (or `/predict`, the canary router) with everything on (key, rate limit on
the embedded store, metrics, the log line, drift, rollout evidence) is sent to the app's WSGI
callable (what gunicorn calls, without sockets) on a prebuilt environ, 2,000 texts a pass.
Each step the request runs is wrapped with a clock where it runs (its function swapped for a
timed one for the pass), so the steps are measured together, in their real order and cache
state: timing each alone in a loop had them add up to only half of the request. Each clock's own
cost (a clocked no-op's) is taken off its step. What no step accounts for is the glue between
them; it must stay under 10 % of the request, or a cost is missing from the list. The Flask
route for the same request (the fast lane taken out) and scikit-learn's predict_proba on the
same text are timed for scale.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

import joblib
import pandas as pd
import prometheus_client

from service import create_app
from service.core import dataplane as dataplane_module
from service.core import inference as inference_module
from service.http import hot_routes
from service.http.views import predict as predict_views
from service.observability import logs

from .common import DATASET, machine

N = 2000
KEY = "key-0123456789abcdef"
MAX_GLUE = 0.10
_module = sys.modules[__name__]  # environ_for is looked up here, so that it can be clocked too


def environ_for(body: bytes, path: str = "/v1/predict") -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_X_API_KEY": KEY,
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def the_steps(app) -> list[tuple[str, object, str]]:
    """(step, owner, attribute): where each step of a fast-lane /v1/predict is looked up as it runs."""
    service = app.extensions["toxiserve"]
    inference = service.inference
    return [
        ("WSGI environ (gunicorn builds it)", _module, "environ_for"),
        ("fast-lane dispatch (route, content type)", hot_routes, "_route"),
        ("fast-lane dispatch (route, content type)", hot_routes, "_is_plain_json"),
        ("the call and its ids", hot_routes, "new_call"),
        ("the call and its ids", hot_routes, "bind_call"),
        ("the call and its ids", hot_routes, "unbind_call"),
        ("key check (sha256, compare)", hot_routes, "check_key"),
        ("JSON parse", hot_routes, "parse_json"),
        ("schema (plain bodies; else marshmallow)", predict_views.PREDICT_SCHEMA, "load"),
        ("ids adopted", predict_views, "adopt_ids"),
        ("rate limit (embedded store)", service.rate_limiter, "check"),
        ("readiness, queue and in-flight bounds", service.dataplane, "_enter"),
        ("routing (the arm, or version served?)", service.dataplane, "_route"),
        ("routing (the arm, or version served?)", inference, "model"),
        ("rollout evidence and shadow (router)", service.evidence, "answered"),
        ("rollout evidence and shadow (router)", service.dataplane, "_shadow"),
        ("deadline (clock, peer check)", dataplane_module, "Deadline"),
        ("deadline (clock, peer check)", hot_routes, "peer_closed"),
        ("readiness, queue and in-flight bounds", service.in_flight, "leave"),
        ("normalise + screen", inference, "screen"),
        ("model (data-only scorer)", inference.models["v1"], "score_with_oov"),
        ("drift", inference.drift, "observe"),
        ("answer body", predict_views, "one_answer"),
        ("answer body", inference_module, "Prediction"),
        ("JSON answer", app.wsgi_app, "dumps"),
        ("guard headers + request id", hot_routes, "guard_headers"),
        ("Prometheus metrics (every update)", logs.metrics, "child"),
        ("Prometheus metrics (every update)", prometheus_client.Counter, "inc"),
        ("Prometheus metrics (every update)", prometheus_client.Histogram, "observe"),
        ("Prometheus metrics (every update)", prometheus_client.Gauge, "inc"),
        ("Prometheus metrics (every update)", prometheus_client.Gauge, "dec"),
        ("scoring cost estimate (for the worker)", inference, "_learn_cost"),
        ("log line", logs, "write_request_line"),
        ("log line", logs.request_log, "info"),  # when another handler or filter would see the record
    ]


@contextmanager
def clocked(steps, spent: dict[str, float], calls: dict[str, int]):
    """Each step's function swapped for one that adds its own time (less that of clocked steps it
    calls: drift's and the rate limit's metric updates are the metrics step's) to `spent[step]`
    and counts its calls; restored after."""
    saved = []
    nested: list[float] = []  # per open clock: the time of the clocked steps inside it so far

    for name, owner, attribute in steps:
        original = getattr(owner, attribute)

        def timed(*args, _original=original, _name=name, **kwargs):
            nested.append(0.0)
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                inner = nested.pop()
                spent[_name] += elapsed - inner  # a step is charged its own time, not its clocked callees'
                calls[_name] += 1
                if nested:
                    nested[-1] += elapsed

        had_own = attribute in getattr(owner, "__dict__", {})
        saved.append((owner, attribute, original, had_own))
        setattr(owner, attribute, timed)
    try:
        yield
    finally:
        for owner, attribute, original, had_own in reversed(saved):
            if had_own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)  # a bound method: the class's again


class _Noop:
    @staticmethod
    def run() -> None:
        return None


def clock_inside_cost() -> float:
    """Seconds a clock adds to the step it times (a clocked no-op's recorded time): taken off each
    step per call, so the steps are not charged for their clocks."""
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    with clocked([("noop", _Noop, "run")], spent, calls):
        for _ in range(200_000):
            _Noop.run()
    return spent["noop"] / calls["noop"]


def per_request(app_callable, bodies, start_response, path: str) -> float:
    """µs per request over one pass of `bodies`."""
    started = time.perf_counter()
    for body in bodies:
        b"".join(app_callable(_module.environ_for(body, path), start_response))
    return (time.perf_counter() - started) / len(bodies) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", choices=["/v1/predict", "/predict"], default="/v1/predict")
    path = parser.parse_args().route
    texts = [t for t in pd.read_csv(DATASET)["text"].sample(N, random_state=2) if len(t) <= 2000]
    store = f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3"
    app = create_app(
        {
            "API_KEYS": f"b:{KEY}",
            "STORE_URL": store,
            "RATE_LIMIT": "1000000/second",
            "STABLE_VERSION": "v1",
            "CANARY_VERSION": "v2",
        }
    )
    gc.freeze()  # as gunicorn.conf.py does before the workers fork: start-up's objects are never collected
    logging.getLogger().handlers[-1].stream = open(os.devnull, "w")  # noqa: SIM115 - formatting is measured
    bodies = [json.dumps({"text": t}).encode() for t in texts]
    statuses = set()

    def start_response(status, headers):
        statuses.add(status)

    steps = the_steps(app)
    plain, wrapped, flask_route = [], [], []
    spent_runs: list[dict[str, float]] = []
    inside = clock_inside_cost()
    for _ in range(5):  # interleaved, so drift in the machine's speed hits all three alike
        plain.append(per_request(app.wsgi_app, bodies, start_response, path))
        flask_route.append(per_request(app.wsgi_app.flask_wsgi, bodies, start_response, path))
        spent: dict[str, float] = defaultdict(float)
        calls: dict[str, int] = defaultdict(int)
        with clocked(steps, spent, calls):
            wrapped.append(per_request(app.wsgi_app, bodies, start_response, path))
        spent_runs.append({name: (s - calls[name] * inside) / len(bodies) * 1e6 for name, s in spent.items()})
    assert statuses == {"200 OK"}, f"not every request was answered 200: {statuses}"
    median = statistics.median
    whole, whole_wrapped = median(plain), median(wrapped)
    print(f"\nPOST {path}, µs per request, inside the whole request (median of 5 passes over {len(texts)} texts;")
    print(f"{machine()})")
    costs = {name: median(run.get(name, 0.0) for run in spent_runs) for name in dict.fromkeys(n for n, _, _ in steps)}
    for name, cost in costs.items():
        print(f"  {name:40} {cost:>7.1f}")
    glue = whole - sum(costs.values())
    print(f"  {'glue between the steps':40} {glue:>7.1f}")
    print(f"{'whole request, fast lane':42} {whole:>7.1f}   (clocked: {whole_wrapped:.1f})")
    print(f"{'whole request, Flask route':42} {median(flask_route):>7.1f}   {median(flask_route) / whole:.2f}x")
    pipeline = joblib.load(app.extensions["toxiserve"].inference.models["v1"].path / "model.joblib")
    started = time.perf_counter()
    for text in texts:
        pipeline.predict_proba([text])
    print(f"{'model alone, sklearn predict_proba':42} {(time.perf_counter() - started) / len(texts) * 1e6:>7.1f}")
    print(f"the steps account for {1 - glue / whole:.0%} of the request")
    if abs(glue) > MAX_GLUE * whole:
        sys.exit(f"{glue:.1f} µs of {whole:.1f} µs is in no step (over {MAX_GLUE:.0%}): a cost is missing")


if __name__ == "__main__":
    main()
