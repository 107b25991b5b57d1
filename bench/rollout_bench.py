"""The rollout's costs, measured on real gunicorn processes in one run.

    .venv/bin/python -m bench.rollout_bench

- follow time: after `PUT /admin/rollout`, how long until routed answers carry the new revision,
  on every host (one host on the embedded store; two hosts on one Redis when it answers);
- hot-path cost of following: what `route()` costs per request (it reads the state in memory), and
  what one poll costs the follower thread (a store read, once per TOXISERVE_ROLLOUT_POLL_SECONDS);
- shadow overhead: the primary's p50 with shadow off and with v2 shadowing 100 % of v1 traffic;
- hot load: p99 while a newly named version loads in every worker, against p99 before.
Medians and ratios; the machine is noisy, so each comparison is interleaved within one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
import timeit
import uuid
from pathlib import Path

import requests

from .common import DATASET, REPO, machine
from .hostile import KEY, Target

ADMIN_KEY = "bench-admin-0001"
HEADERS = {"X-API-Key": KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}


def admin_env(store_url: str, namespace: str, **extra) -> dict:
    return {
        "TOXISERVE_ADMIN_KEYS": f"ops:{ADMIN_KEY}",
        "TOXISERVE_STORE_URL": store_url,
        "TOXISERVE_STORE_NAMESPACE": namespace,
        **extra,
    }


def put(target: Target, change: dict) -> int:
    answer = requests.put(f"{target.url}/admin/rollout", json=change, headers=ADMIN, timeout=60)
    answer.raise_for_status()
    return answer.json()["revision"]


def follow_seconds(admin: Target, hosts: list[Target], percent: float) -> float:
    """Seconds from the PUT's answer until 20 answers in a row from every host carry the new revision."""
    revision = str(put(admin, {"canary_percent": percent}))
    changed = time.perf_counter()
    followed = []
    for host in hosts:
        streak = 0
        with requests.Session() as session:
            while streak < 20:
                answer = session.post(f"{host.url}/predict", json={"text": "follow"}, headers=HEADERS, timeout=10)
                streak = streak + 1 if answer.headers.get("X-Rollout-Revision") == revision else 0
                if streak == 1:
                    first_new = time.perf_counter()
        followed.append(first_new - changed)
    return max(followed)


def p50_ms(target: Target, seconds: float, rate: float | None = None) -> float:
    """One client: back to back (rate None: the worst case, the worker never idles long), or one
    request every 1/rate s (open loop, as independent users arrive)."""
    samples = []
    deadline = time.perf_counter() + seconds
    next_send = time.perf_counter()
    with requests.Session() as session:
        while time.perf_counter() < deadline:
            if rate:
                next_send += 1 / rate
                time.sleep(max(0.0, next_send - time.perf_counter()))
            started = time.perf_counter()
            session.post(f"{target.url}/predict", json={"text": "you are a lovely idiot"}, headers=HEADERS, timeout=10)
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def under_load(target: Target, seconds: float, threads: int = 4) -> tuple[list[float], int]:
    latencies, errors, stop = [], [0], threading.Event()

    def run() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                started = time.perf_counter()
                answer = session.post(f"{target.url}/predict", json={"text": "load"}, headers=HEADERS, timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
                errors[0] += answer.status_code != 200

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return latencies, errors[0]


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def hot_path_costs() -> None:
    from service import create_app

    store = f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3"
    app = create_app({"API_KEYS": f"b:{KEY}", "STORE_URL": store, "RATE_LIMIT": ""})
    service = app.extensions["toxiserve"]
    rollout = service.rollout
    ids = [uuid.uuid4().hex for _ in range(10_000)]
    routed = min(timeit.repeat(lambda: [service.route(i) for i in ids], number=1, repeat=5)) / len(ids) * 1e6
    check = min(timeit.repeat(lambda: [rollout.ensure_following() for _ in ids], number=1, repeat=5)) / len(ids) * 1e6
    reads = {"sqlite": min(timeit.repeat(rollout.backend.read, number=200, repeat=5)) / 200 * 1e6}
    try:
        from service.store import open_store

        redis_store = open_store("redis://127.0.0.1:6379/0", f"bench-{uuid.uuid4().hex[:8]}")
        redis_store.rollout.write(0, rollout.current.as_dict(), {})
        reads["redis"] = min(timeit.repeat(redis_store.rollout.read, number=200, repeat=5)) / 200 * 1e6
    except Exception as exc:  # no Redis here
        reads["redis"] = f"n/a ({type(exc).__name__})"
    print("\n## hot path")
    print(f"route() per request: {routed:.2f} µs, of which the follower check (a pid compare) {check:.3f} µs")
    for name, value in reads.items():
        shown = f"{value:.0f} µs" if isinstance(value, float) else value
        print(f"one poll (store read), {name}: {shown}, once per TOXISERVE_ROLLOUT_POLL_SECONDS per process")


def train_v3(root: Path) -> None:
    from shared_features import resolve_params
    from shared_features.dataset import read_labeled
    from shared_features.training import train_model

    shutil.copytree(REPO / "models", root, dirs_exist_ok=True)
    train_model(read_labeled(DATASET), "toxicity", "v3", resolve_params("char-ngrams"), root, threshold=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"# {machine()}")
    hot_path_costs()

    sqlite = f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3"
    with Target(REPO, admin_env(sqlite, "follow")) as host:
        times = [follow_seconds(host, [host], 10.0 + 10 * (i % 2)) for i in range(args.rounds)]
    print(
        f"\n## follow time, one host, embedded store: median {statistics.median(times):.3f} s, max {max(times):.3f} s"
    )
    from service.store import open_store

    try:
        open_store("redis://127.0.0.1:6379/0", "probe").idempotency.ping()
        env = admin_env("redis://127.0.0.1:6379/0", f"follow-{uuid.uuid4().hex[:8]}")
        with Target(REPO, env) as first, Target(REPO, env) as second:
            times = [follow_seconds(first, [first, second], 10.0 + 10 * (i % 2)) for i in range(args.rounds)]
        print(f"two hosts, one Redis: median {statistics.median(times):.3f} s, max {max(times):.3f} s")
    except Exception as exc:
        print(f"two hosts, one Redis: skipped ({type(exc).__name__})")

    print("\n## shadow overhead (primary v1 p50; v2 shadows 100 %; one client; 3 s blocks interleaved)")
    for label, rate in (("100 requests/s (open loop)", 100.0), ("back to back (closed loop)", None)):
        with Target(REPO, admin_env(f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3", "shadow")) as host:
            put(host, {"canary_percent": 0})
            off, on = [], []
            for _ in range(args.rounds):
                put(host, {"shadow": None, "shadow_percent": 0})
                off.append(p50_ms(host, 3, rate))
                put(host, {"shadow": "v2", "shadow_percent": 100})
                on.append(p50_ms(host, 3, rate))
            summary = requests.get(f"{host.url}/admin/rollout/shadow", headers=ADMIN, timeout=10).json()
        off_ms, on_ms = statistics.median(off), statistics.median(on)
        compared = sum(pair["compared"] for pair in summary["pairs"])
        print(
            f"{label}: p50 shadow off {off_ms:.3f} ms, on {on_ms:.3f} ms, ratio {on_ms / off_ms:.3f}; "
            f"{compared} texts shadowed, dropped {summary['dropped']}, pairs {summary['pairs']}"
        )

    print("\n## hot load under load (4 client threads)")
    root = Path(tempfile.mkdtemp()) / "models"
    train_v3(root)
    env = admin_env(f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3", "hot", TOXISERVE_MODEL_DIR=str(root))
    with Target(REPO, env) as host:
        before, before_errors = under_load(host, 3)
        changer = threading.Timer(0.2, put, (host, {"canary": "v3", "canary_percent": 50}))
        changer.start()
        during, during_errors = under_load(host, 3)
        changer.join()
    print(
        f"p99 before {p99(before):.1f} ms, while v3 loads {p99(during):.1f} ms: ratio {p99(during) / p99(before):.2f}; "
        f"errors {before_errors} / {during_errors}"
    )


if __name__ == "__main__":
    main()
