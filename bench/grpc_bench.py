"""gRPC Predict next to HTTP /v1/predict, in one run: p50/p99 latency and throughput.

    .venv/bin/python -m bench.grpc_bench [--calls 2000] [--concurrency 1 8]

Starts both Procfile processes (web: gunicorn, 2 workers; grpc: one process) on free ports and
sends the same texts through a Python client of each protocol (requests with keep-alive, a gRPC
stub on one channel): client-side overhead is in both numbers alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pandas as pd
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.grpc.gen import toxicity_pb2 as pb
from service.grpc.gen import toxicity_pb2_grpc as rpc

from .common import BIN, DATASET, REPO, machine
from .online_bench import free_port

KEY = "bench-key-0123456789"


def start(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drive(call, texts: list[str], concurrency: int) -> dict:
    latencies: list[float] = []

    def one(text: str) -> None:
        started = time.perf_counter()
        call(text)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, texts))
    wall = time.perf_counter() - started
    return {
        "rps": len(texts) / wall,
        "p50": percentile(latencies, 0.5) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    texts = [t for t in pd.read_csv(DATASET)["text"].sample(args.calls, random_state=1, replace=True) if len(t) <= 2000]
    web_port, grpc_port = free_port(), free_port()
    store = tempfile.mkdtemp(prefix="toxiserve-grpcbench-")
    common = {
        "TOXISERVE_API_KEYS": f"bench:{KEY}",
        "TOXISERVE_BIND_HOST": "127.0.0.1",
        "TOXISERVE_RATE_LIMIT": "1000000/second",
        "TOXISERVE_STORE_URL": f"sqlite:///{store}/s.sqlite3",
    }
    web = start(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "service:create_app()"],
        {**common, "PORT": str(web_port), "WEB_CONCURRENCY": "2"},
    )
    grpc_proc = start([str(BIN / "python"), "-m", "service.grpc"], {**common, "TOXISERVE_GRPC_PORT": str(grpc_port)})
    try:
        session = requests.Session()
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                ready = session.get(f"http://127.0.0.1:{web_port}/readyz", timeout=1).status_code == 200
                serving = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1
                if ready and serving:
                    break
            except (requests.ConnectionError, grpc.RpcError):
                time.sleep(0.05)
        stub = rpc.ToxicityStub(channel)
        url = f"http://127.0.0.1:{web_port}/v1/predict"

        def over_http(text: str) -> None:
            response = session.post(url, json={"text": text}, headers={"X-API-Key": KEY}, timeout=10)
            assert response.status_code == 200, response.text

        def over_grpc(text: str) -> None:
            stub.Predict(pb.PredictRequest(text=text, version="v1"), metadata=[("x-api-key", KEY)], timeout=10)

        for call in (over_http, over_grpc):  # warm both
            drive(call, texts[:100], 2)
        print(f"\ngRPC vs HTTP Predict (model v1): {machine()}; {len(texts)} calls per row, Python clients")
        print(f"{'protocol':10} {'clients':>7} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for concurrency in args.concurrency:
            rows = {"HTTP": drive(over_http, texts, concurrency), "gRPC": drive(over_grpc, texts, concurrency)}
            for name, row in rows.items():
                print(f"{name:10} {concurrency:>7} {row['rps']:>9,.0f} {row['p50']:>8.2f} {row['p99']:>8.2f}")
    finally:
        for proc in (web, grpc_proc):
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
