"""Online benchmark: the real service against a bare-model Flask app, a constant endpoint and the peer
a user would pick instead (FastAPI on uvicorn calling the same predict_proba).

    .venv/bin/python -m bench.online_bench [--duration 5] [--runs 3] [--connections 8 32]
    .venv/bin/python -m bench.online_bench --tree before=/tmp/before --tree after=. --routes /v1/predict

Each server runs alone (so they never compete for the cores), the Flask ones under the same gunicorn
config (2 workers), FastAPI under uvicorn with 2 workers (`pip install -e '.[bench]'`; skipped when
absent), on the same port; wrk (Debian package `wrk`) drives /v1/predict, /predict and
/v1/batch_predict (32 texts). Prints requests/s, p50/p95/p99, errors and the ratios to each
baseline (medians of --runs), and each server's cold start (launch -> first 200 from /readyz).
With --tree, the service runs from each named checkout (its own code and models) beside the same
baselines; runs are interleaved round by round, so machine noise hits every server alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import requests

from .common import BIN, DATASET, OUT, REPO, describe_checkouts, machine, markdown_table, write_results_page

API_KEY = "bench-key-0123456789"
UVICORN = "uvicorn:"  # an app served by uvicorn (a factory), not gunicorn
ROUTES = ("/v1/predict", "/predict", "/v1/batch_predict")
# name -> (gunicorn app, extra environment). The others after the first three isolate micro-batching's effect.
SERVERS = {
    "service": ("service:create_app()", {}),
    "bare model": ("bench.baselines:bare_model_app()", {}),
    "constant": ("bench.baselines:constant_app()", {}),
    "fastapi": (f"{UVICORN}bench.fastapi_baseline:create_app", {}),
    "fastapi (def)": (f"{UVICORN}bench.fastapi_baseline:create_thread_pool_app", {}),
    "svc+mb": ("service:create_app()", {"TOXISERVE_MICROBATCH": "true"}),
    # COMPILED_MAX_BATCH=0: every call takes the vectorised path, with its fixed numpy cost per call
    "svc vectorised": ("service:create_app()", {"TOXISERVE_COMPILED_MAX_BATCH": "0"}),
    "svc vectorised+mb": (
        "service:create_app()",
        {"TOXISERVE_COMPILED_MAX_BATCH": "0", "TOXISERVE_MICROBATCH": "true"},
    ),
    # many threads per worker: many concurrent requests for a micro-batch to gather
    "svc vectorised t48": ("service:create_app()", {"TOXISERVE_COMPILED_MAX_BATCH": "0", "TOXISERVE_THREADS": "48"}),
    "svc vectorised+mb t48": (
        "service:create_app()",
        {"TOXISERVE_COMPILED_MAX_BATCH": "0", "TOXISERVE_MICROBATCH": "true", "TOXISERVE_THREADS": "48"},
    ),
}
HAVE_FASTAPI = all(importlib.util.find_spec(name) for name in ("fastapi", "uvicorn"))
DEFAULT_SERVERS = ["service", "bare model", "constant"] + (["fastapi", "fastapi (def)"] if HAVE_FASTAPI else [])

LUA = """
local bodies = {BODIES}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "KEY"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format('{"rps": %f, "p50": %f, "p95": %f, "p99": %f, "non2xx": %d, "socket_errors": %d}\\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, summary.errors.status, errors))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lua_script(route: str, texts: list[str]) -> str:
    if route.endswith("batch_predict"):
        bodies = [json.dumps({"texts": texts[i : i + 32]}) for i in range(0, 32 * 16, 32)]
    else:
        bodies = [json.dumps({"text": t}) for t in texts[:256]]
    quoted = ", ".join("[==[" + b + "]==]" for b in bodies)
    path = Path(tempfile.mkstemp(suffix=".lua")[1])
    path.write_text(LUA.replace("{BODIES}", "{" + quoted + "}").replace("KEY", API_KEY))
    return str(path)


def server_argv(app: str, port: int) -> list[str]:
    if app.startswith(UVICORN):
        factory = app.removeprefix(UVICORN)
        return [str(BIN / "uvicorn"), "--factory", factory, "--workers", "2", "--host", "127.0.0.1"] + [
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    return [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", app]


class Running:
    def __init__(self, app: str, port: int, log_path: Path, extra_env: dict | None = None, tree: Path = REPO) -> None:
        env = {
            **os.environ,
            "PORT": str(port),
            "TOXISERVE_BIND_HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "TOXISERVE_API_KEYS": f"bench:{API_KEY}",
            "PYTHONPATH": str(tree),
            "TOXISERVE_STORE_URL": f"sqlite:///{tempfile.mkdtemp(prefix='toxiserve-bench-')}/store.sqlite3",
            # everything on, with a limit high enough that the load itself never trips it
            "TOXISERVE_RATE_LIMIT": "1000000/second",
            # v1 is the model the bare-model baseline serves: the same work on /v1/predict and /predict
            # (the shipped defaults load v3 and v2 only, and /v1/predict would measure 404s)
            "TOXISERVE_STABLE_VERSION": "v1",
            "TOXISERVE_CANARY_VERSION": "v2",
            **(extra_env or {}),
        }
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            server_argv(app, port),
            cwd=tree,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.cold_start = self._wait_ready()

    def _wait_ready(self) -> float:
        while time.perf_counter() - self.started < 30:
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.log.name}")
            time.sleep(0.01)
        raise TimeoutError("server not ready in 30 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def wrk(url: str, script: str, connections: int, duration: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_of(results: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


COLUMNS = ["server", "route", "conns", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "vs bare", "vs constant"]
COLUMNS += ["vs fastapi", "vs fastapi (def)"]


def write_online_page(args: argparse.Namespace, cold_starts: dict[str, list[float]], rows: list[list]) -> Path:
    how = (
        "Each server alone, the Flask ones under the same gunicorn config (2 gthread workers), FastAPI under "
        "uvicorn (2 workers, uvloop and httptools), wrk on the same cores, "
        f"runs interleaved, {args.duration} s per run, median of {args.runs} runs."
    )
    for label, seconds in cold_starts.items():
        median = statistics.median(seconds)
        how += f" {label.capitalize()}: cold start (launch to the first 200 from `/readyz`) {median:.2f} s."
    command = " ".join(["python -m bench.online_bench", *sys.argv[1:]])
    trees = {name: Path(path).resolve() for name, path in (item.split("=", 1) for item in args.tree or [])}
    sections = [describe_checkouts(trees or {"service": REPO}), how, markdown_table(COLUMNS, rows)]
    return write_results_page("online", "Online benchmark", command, sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--servers", nargs="+", default=DEFAULT_SERVERS, choices=list(SERVERS))
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--tree", action="append", help="NAME=PATH: serve the service from this checkout too")
    parser.add_argument("--markdown", action="store_true", help="also write docs/performance/online.md")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    if not HAVE_FASTAPI:
        print("fastapi baseline skipped: pip install -e '.[bench]' brings FastAPI and uvicorn", file=sys.stderr)
    texts = [t for t in pd.read_csv(DATASET)["text"].sample(2048, random_state=0) if len(t) <= 2000]
    scripts = {route: lua_script(route, texts) for route in ROUTES}
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    table: dict[tuple, dict] = {}
    cold_starts: dict[str, list[float]] = {}
    trees = {name: Path(path).resolve() for name, path in (item.split("=", 1) for item in args.tree or [])}
    # (label, gunicorn app, extra environment, checkout): the service's servers once per --tree
    runs = []
    for name in args.servers:
        app, extra_env = SERVERS[name]
        if trees and app == SERVERS["service"][0]:
            runs += [(f"{name} ({tree_name})", app, extra_env, tree) for tree_name, tree in trees.items()]
        else:
            runs.append((name, app, extra_env, REPO))
    for _ in range(args.runs):
        for label, app, extra_env, tree in runs:
            log = OUT / f"online_{label.replace(' ', '_').replace('+', '_').replace('(', '').replace(')', '')}.log"
            server = Running(app, port, log, extra_env, tree)
            cold_starts.setdefault(label, []).append(server.cold_start)
            try:
                for route in args.routes:
                    wrk(server.url + route, scripts[route], 8, 1)  # warm the connection pools and caches
                    for connections in args.connections:
                        table.setdefault((label, route, connections), []).append(
                            wrk(server.url + route, scripts[route], connections, args.duration)
                        )
            finally:
                server.stop()
    medians = {key: median_of(results) for key, results in table.items()}
    # A server that answers errors fast looks fast: say so, rather than print a ratio of refusals.
    failing = [key for key, m in medians.items() if m["non2xx"] > 0.01 * m["rps"] * args.duration]
    for name, route, connections in failing:
        print(f"WARNING: {name} {route} at {connections} connections answered mostly errors", file=sys.stderr)
    print(
        f"\nonline benchmark: {machine()}; gunicorn 2 workers (gthread); wrk -t2 on the same cores;"
        f" {args.duration}s per run, median of {args.runs}"
    )
    for label, seconds in cold_starts.items():
        print(
            f"{label} cold start (launch -> first 200 /readyz): median {statistics.median(seconds):.2f}s "
            f"(runs: {', '.join(f'{c:.2f}' for c in seconds)})"
        )
    rows = []
    header = (
        f"{'server':18} {'route':18} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'vs bare':>8} {'vs const':>8} {'vs fastapi':>10} {'vs fastapi (def)':>16}"
    )
    print(header + "\n" + "-" * len(header))
    for (name, route, connections), m in medians.items():
        bare = medians.get(("bare model", route, connections))
        const = medians.get(("constant", route, connections))
        peers = [medians.get((peer, route, connections)) for peer in ("fastapi", "fastapi (def)")]
        vs_bare, vs_const, vs_peer, vs_pool = (
            f"{m['rps'] / b['rps']:.2f}x" if b else "-" for b in (bare, const, *peers)
        )
        errors = int(m["non2xx"] + m["socket_errors"])
        print(
            f"{name:18} {route:18} {connections:>5} {m['rps']:>8,.0f} {m['p50']:>7.2f} {m['p95']:>7.2f} "
            f"{m['p99']:>7.2f} {errors:>6} {vs_bare:>8} {vs_const:>8} {vs_peer:>10} {vs_pool:>16}"
        )
        rows.append(
            [name, f"`{route}`", connections, f"{m['rps']:,.0f}", f"{m['p50']:.2f}", f"{m['p95']:.2f}"]
            + [f"{m['p99']:.2f}", errors, vs_bare, vs_const, vs_peer, vs_pool]
        )
    if args.markdown:
        print(write_online_page(args, cold_starts, rows))
    (OUT / "online.json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in medians.items()}, indent=1))


if __name__ == "__main__":
    main()
