"""Start-up cost, measured the same way against any checkout of this project, in one run.

    .venv/bin/python -m bench.startup_bench                               # this checkout
    .venv/bin/python -m bench.startup_bench --tree before=/tmp/before --tree after=.

Per checkout (its own code and models), interleaved round by round so machine noise hits both:
- cold start: launch of the Procfile web process (2 workers) -> first 200 from `/readyz`;
- `batchjob --help` and `batchjob score --help`;
- PSS of one web worker (shared pages split between the processes that share them), and which heavy
  modules a worker has imported.
The yardstick is `python -c "import sklearn.base"` in the same venv and the same rounds: the issue's
bounds are ratios against it (cold start < 1x, `batchjob --help` < 0.3x). Medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from .common import BIN, describe_checkouts, machine, markdown_table, write_results_page
from .hostile import free_port

HEAVY = ("sklearn", "scipy", "pandas", "joblib", "pyarrow", "redis", "limits.aio")


def run_seconds(argv: list[str], tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True, capture_output=True)
    return time.perf_counter() - started


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no Pss line")


def cold_start(tree: Path) -> tuple[float, float, list[str]]:
    """(seconds to /readyz 200, PSS MiB of one worker, heavy modules imported by the worker)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "PORT": str(port),
        "TOXISERVE_BIND_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "TOXISERVE_API_KEYS": "bench:bench-key-0001112222",
        "TOXISERVE_STORE_URL": f"sqlite:///{tempfile.mkdtemp(prefix='startup-')}/store.sqlite3",
    }
    argv = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "service:create_app()"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{tree}: gunicorn exited with {proc.returncode}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        worker = int(children[0])
        maps = Path(f"/proc/{worker}/maps").read_text()
        heavy = [name for name in HEAVY if f"/{name.replace('.', '/')}/" in maps or f"/{name}/" in maps]
        return seconds, pss_mib(worker), heavy
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def heavy_modules(tree: Path) -> list[str]:
    """Heavy modules in sys.modules after create_app() (the worker's view; maps miss pure Python)."""
    code = (
        "import json, sys; from service import create_app; create_app();"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "TOXISERVE_API_KEYS": "bench:bench-key-0001112222"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", help="NAME=PATH of a checkout (default: this one)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--markdown", action="store_true", help="also write docs/performance/startup.md")
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree) if args.tree else {"this": "."}
    trees = {name: Path(path).resolve() for name, path in trees.items()}
    python = sys.executable
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in [*trees, "yardstick"]}
    heavy: dict[str, list[str]] = {}

    def add(name: str, key: str, value: float) -> None:
        samples[name].setdefault(key, []).append(value)

    for _ in range(args.rounds):
        add("yardstick", "import sklearn.base", run_seconds([python, "-c", "import sklearn.base"], Path.cwd()))
        for name, tree in trees.items():
            seconds, pss, heavy[name] = cold_start(tree)
            add(name, "cold start", seconds)
            add(name, "worker PSS MiB", pss)
            add(name, "batchjob --help", run_seconds([python, "-m", "batchjob.cli", "--help"], tree))
            add(name, "batchjob score --help", run_seconds([python, "-m", "batchjob.cli", "score", "--help"], tree))
    yardstick = statistics.median(samples["yardstick"]["import sklearn.base"])
    print(f"# {machine()}; {args.rounds} rounds, medians")
    print(f"python -c 'import sklearn.base': {yardstick:.3f} s")
    table: dict[str, dict[str, str]] = {}
    for name, tree in trees.items():
        medians = {key: statistics.median(values) for key, values in samples[name].items()}
        for key, value in medians.items():
            shown = f"{value:.1f}" if key.endswith("MiB") else f"{value:.3f} s ({value / yardstick:.2f}x)"
            table.setdefault(key, {})[name] = shown
        table.setdefault("heavy libraries mapped by a worker", {})[name] = ", ".join(heavy[name]) or "none"
        print(f"\n## {name} ({tree})")
        for key, value in medians.items():
            if key.endswith("MiB"):
                print(f"{key}: {value:.1f}")
            else:
                print(f"{key}: {value:.3f} s = {value / yardstick:.2f}x the sklearn import")
        print(f"heavy modules after create_app(): {heavy_modules(tree)}")
        print(f"heavy libraries mapped by a worker: {heavy[name]}")
    if args.markdown:
        how = (
            f"{args.rounds} rounds, interleaved, medians; (N x) is the ratio to `python -c 'import sklearn.base'` "
            f"in the same rounds: {yardstick:.3f} s."
        )
        rows = [[key, *(values.get(name, "") for name in trees)] for key, values in table.items()]
        page = markdown_table(["measure", *trees], rows, text_columns=1)
        command = " ".join(["python -m bench.startup_bench", *sys.argv[1:]])
        print(write_results_page("startup", "Start-up", command, [describe_checkouts(trees), how, page]))


if __name__ == "__main__":
    main()
