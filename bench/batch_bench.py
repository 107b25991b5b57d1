"""Batch throughput: `batchjob score` (1 and all workers) against in-memory scoring in one process.

    .venv/bin/python -m bench.batch_bench [--rows 1000000] [--version v1] [--runs 1]

Makes a Parquet file of --rows rows by cycling the dataset's texts, then in one run measures
rows/s and peak RSS of each, and prints the ratio all-workers / (workers x in-memory rate);
the target is >= 0.9 with peak RSS < 1 GiB for the job. In memory means both paths on every text:
scikit-learn's predict_proba on the pickled pipeline, and the data-only scorer's vectorised path
(what the batch job runs); their ratio says which is faster on big chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import pandas as pd

from .common import BIN, DATASET, OUT, REPO, machine, timed

IN_MEMORY = """
import sys, time, joblib, pyarrow.parquet as pq
from shared_features import ModelRegistry
texts = pq.read_table(sys.argv[1], columns=["text"]).column("text").to_pylist()
model = ModelRegistry().load("toxicity", sys.argv[2])
score = joblib.load(model.path / "model.joblib").predict_proba if sys.argv[3] == "sklearn" else model.score
started = time.perf_counter()
score(texts)
print(len(texts) / (time.perf_counter() - started))
"""


def make_input(rows: int) -> str:
    path = OUT / f"batch_{rows}.parquet"
    if not path.exists():
        texts = pd.read_csv(DATASET)["text"]
        repeated = texts.iloc[[i % len(texts) for i in range(rows)]].reset_index(drop=True)
        frame = pd.DataFrame({"id": range(rows), "text": repeated})
        OUT.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False, row_group_size=50_000)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--runs", type=int, default=1, help="repeat each measurement; medians are reported")
    parser.add_argument("--chunk-size", type=int, default=20_000)
    args = parser.parse_args()
    if not DATASET.is_file():
        sys.exit(f"dataset not found at {DATASET}")
    cores = os.cpu_count() or 1
    source = make_input(args.rows)
    results = {}
    for label, argv in {
        "in-memory sklearn predict_proba (1 process)": [
            str(BIN / "python"),
            "-c",
            IN_MEMORY,
            source,
            args.version,
            "sklearn",
        ],
        "in-memory data-only scorer (1 process)": [str(BIN / "python"), "-c", IN_MEMORY, source, args.version, "ours"],
        "batchjob score --workers 1": [
            str(BIN / "batchjob"),
            "score",
            source,
            "--output",
            str(OUT / "o1.parquet"),
            "--workers",
            "1",
            "--model-version",
            args.version,
            "--chunk-size",
            str(args.chunk_size),
        ],
        f"batchjob score --workers {cores}": [
            str(BIN / "batchjob"),
            "score",
            source,
            "--output",
            str(OUT / "on.parquet"),
            "--workers",
            str(cores),
            "--model-version",
            args.version,
            "--chunk-size",
            str(args.chunk_size),
        ],
    }.items():
        runs = [timed(argv, {"PYTHONPATH": str(REPO)}) for _ in range(args.runs)]
        wall = [args.rows / r.seconds for r in runs]  # the whole process: interpreter start, imports, all
        if label.startswith("in-memory"):
            rates = [float(r.stdout.strip().splitlines()[-1]) for r in runs]  # predict_proba alone
        else:
            summaries = [json.loads(r.stdout) for r in runs]
            assert all(s["rows_in"] == args.rows for s in summaries)
            rates = [s["rows_per_second"] for s in summaries]  # model load, pool start, read, score, write
        results[label] = (
            statistics.median(rates),
            statistics.median(wall),
            statistics.median(r.max_rss_mib for r in runs),
        )

    baseline = results["in-memory data-only scorer (1 process)"][0]
    sklearn_rate = results["in-memory sklearn predict_proba (1 process)"][0]
    print(f"\nbatch benchmark: {args.rows:,} rows, model {args.version}, chunk {args.chunk_size:,}, {machine()}")
    print(f"in memory, data-only vectorised / sklearn predict_proba = {baseline / sklearn_rate:.2f}")
    print(f"{'run':44} {'rows/s':>9} {'wall rows/s':>12} {'peak RSS MiB':>13} {'rows/s vs in-memory':>20}")
    for label, (rate, wall, rss) in results.items():
        print(f"{label:44} {rate:>9,.0f} {wall:>12,.0f} {rss:>13,.0f} {rate / baseline:>19.2f}x")
    best, best_wall, _ = results[f"batchjob score --workers {cores}"]
    print(
        f"\nall workers / ({cores} x in-memory single core) = {best / (cores * baseline):.2f} "
        f"(wall clock incl. interpreter start: {best_wall / (cores * baseline):.2f}); target >= 0.9"
    )
    print(
        "rows/s: the job's own summary (excludes only interpreter start-up) / the scoring call alone (excludes "
        "reading, model load); peak RSS: the largest single process, from /usr/bin/time -v"
    )


if __name__ == "__main__":
    main()
