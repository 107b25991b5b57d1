"""The rollout controller, measured in one run.

    .venv/bin/python -m bench.controller_bench [--runs 3]

- request-path overhead of the evidence: what one routed answer's tally costs (the recorder
  alone), and a routed request in-process with the tally on against off, interleaved; what one
  flush costs the follower thread (one store write per poll);
- how long each bad canary survives: from the plan's start to its rollback, by the history's
  clock, with the canary requests it answered, on a real gunicorn (2 workers, embedded store),
  with labeled traffic (2 clients, feedback on) and the default guardrails, min_requests 100,
  interval 1 s: one raising on the tweets with "!" (10 %), one sleeping 50 ms, one trained on
  inverted labels (caught by feedback with PSI off, and by PSI with feedback off);
- takeover: the controller's process SIGKILLed mid-plan, seconds until another decides, in intervals.
Medians over --runs; the machine is noisy, so read ratios and orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import timeit
from datetime import datetime
from pathlib import Path

import requests

from .common import BIN, DATASET, REPO, machine
from .hostile import KEY, Target
from .replay import Replay, labeled_tweets
from .rollout_bench import ADMIN, admin_env

DERIVED = ("sha256", "size_bytes", "libraries", "serializer", "data_only", "feature_fingerprint")


def build_models(root: Path) -> Path:
    """Shipped models + v10 (inverted labels, trained by `batchjob train`), v4 (raises), v5 (sleeps), v6 (= v1)."""
    import joblib

    from shared_features import save_artifact
    from tests.service.faulty_pipelines import RaisesOnSome, Sleeps  # the tests' bad canaries, one definition

    models = root / "models"
    shutil.copytree(REPO / "models", models)
    subprocess.run(
        [str(BIN / "batchjob"), "train", "--data", str(DATASET), "--name", "toxicity", "--model-version", "v10"]
        + ["--preset", "word-ngrams", "--positive-labels", "0", "--threshold", "0.5", "--output-dir", str(models)],
        check=True,
        capture_output=True,
    )
    base = models / "toxicity" / "v1"
    full = json.loads((base / "manifest.json").read_text())
    manifest = {k: v for k, v in full.items() if k not in DERIVED}
    pipeline = joblib.load(base / "model.joblib")
    save_artifact(RaisesOnSome(pipeline), models / "toxicity" / "v4", {**manifest, "version": "v4"})
    save_artifact(Sleeps(pipeline, 0.05), models / "toxicity" / "v5", {**manifest, "version": "v5"})
    shutil.copytree(base, models / "toxicity" / "v6")
    (models / "toxicity" / "v6" / "manifest.json").write_text(json.dumps({**full, "version": "v6"}))
    return models


def overhead(rounds: int = 10, requests_per_round: int = 1000) -> dict:
    from service import create_app
    from service.rollout.evidence import EvidenceRecorder
    from service.store import open_store

    store = open_store(f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3", "bench")
    recorder = EvidenceRecorder(store.evidence, lambda op, fn, *a, strict=False: fn(*a))
    tally = min(timeit.repeat(lambda: recorder.answered(2, "canary", 0.0042, [0.61]), number=20000, repeat=5))
    for revision in range(2, 4):  # a realistic poll's worth: two revisions, both arms, spread buckets
        for i in range(300):
            recorder.answered(revision, ("stable", "canary")[i % 2], 0.001 * (1 + i % 40), [i / 300])
    started = time.perf_counter()
    recorder.flush()
    flush = time.perf_counter() - started

    config = {"TESTING": True, "API_KEYS": f"b:{KEY}", "RATE_LIMIT": "", "STORE_URL": store.url, "LOG_LEVEL": "WARNING"}
    app = create_app(config)
    client, service = app.test_client(), app.extensions["toxiserve"]
    answered = service.evidence.answered
    texts = [text for text, _ in labeled_tweets()[:requests_per_round]]
    per_request = {"on": [], "off": []}
    for round_ in range(rounds):
        for mode in ("on", "off") if round_ % 2 else ("off", "on"):  # ABBA: drift cancels out
            service.evidence.answered = answered if mode == "on" else (lambda *args: None)
            began = time.perf_counter()
            for text in texts:  # no request id: no idempotency writes to blur the comparison
                client.post("/predict", json={"text": text}, headers={"X-API-Key": KEY})
            per_request[mode].append((time.perf_counter() - began) / len(texts))
    on, off = statistics.median(per_request["on"]), statistics.median(per_request["off"])
    return {"tally_us": tally / 20000 * 1e6, "flush_ms": flush * 1000, "on_us": on * 1e6, "off_us": off * 1e6}


PLAN = {"steps": [10, 50, 100], "step_seconds": 60, "min_requests": 100, "interval_seconds": 1}


def finished(target: Target, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = requests.get(f"{target.url}/admin/rollout/plan", headers=ADMIN, timeout=30).json()
        if found["status"] != "running":
            return found
        time.sleep(0.2)
    raise RuntimeError("the plan did not end")


def entries(target: Target, plan_id: str) -> list[dict]:
    history = requests.get(f"{target.url}/admin/rollout/history", headers=ADMIN, timeout=30).json()["history"]
    return [entry for entry in reversed(history) if entry.get("plan") == plan_id]


def at(entry: dict) -> float:
    return datetime.fromisoformat(entry["at"]).timestamp()


def survival(target: Target, rows, canary: str, guardrails: dict) -> tuple[float, int, str]:
    body = {"canary": canary, **PLAN, "guardrails": guardrails}
    plan_id = requests.put(f"{target.url}/admin/rollout/plan", json=body, headers=ADMIN, timeout=60).json()["id"]
    with Replay([target.url], KEY, rows, threads=2, feedback=True, seconds=300):
        ended = finished(target)
    log = entries(target, plan_id)
    return at(log[-1]) - at(log[0]), log[-1]["evidence"]["canary_requests"], ended["outcome"]["reason"]


def takeover(target: Target, rows) -> float:
    reset = {"stable": "v1", "canary": "v2", "canary_percent": 0, "reason": "bench: back to v1"}
    requests.put(f"{target.url}/admin/rollout", json=reset, headers=ADMIN, timeout=60).raise_for_status()
    body = {"canary": "v6", "steps": [10, 50, 100], "step_seconds": 5, "min_requests": 50, "interval_seconds": 1}
    started = requests.put(f"{target.url}/admin/rollout/plan", json=body, headers=ADMIN, timeout=60)
    started.raise_for_status()
    plan_id = started.json()["id"]
    with Replay([target.url], KEY, rows, threads=2, seconds=300):
        while requests.get(f"{target.url}/admin/rollout/plan", headers=ADMIN, timeout=30).json()["step"] < 1:
            time.sleep(0.1)
        victim = requests.get(f"{target.url}/admin/rollout/plan", headers=ADMIN, timeout=30).json()["controller"]
        os.kill(int(victim["owner"].split(":")[1]), signal.SIGKILL)
        killed = time.time()
        finished(target)
    later = [entry for entry in entries(target, plan_id) if at(entry) > killed]
    return at(later[0]) - killed


def main() -> None:
    parser = argparse.ArgumentParser(description="the rollout controller's costs and reaction times")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    costs = overhead()
    print(
        f"request path: one tally {costs['tally_us']:.2f} us; routed /predict in-process {costs['on_us']:.1f} us with "
        f"the tally vs {costs['off_us']:.1f} us without ({costs['on_us'] / costs['off_us']:.3f}x); "
        f"one flush of 600 answers {costs['flush_ms']:.2f} ms (follower thread, once per poll)"
    )
    rows = labeled_tweets()
    models = build_models(Path(tempfile.mkdtemp(prefix="controller-bench-")))
    env = {**admin_env(f"sqlite:///{tempfile.mkdtemp()}/s.sqlite3", "bench"), "TOXISERVE_MODEL_DIR": str(models)}
    cases = [
        ("v4 raises on 10 % of texts", "v4", {}),
        ("v5 sleeps 50 ms", "v5", {}),
        ("v10 inverted labels, feedback only", "v10", {"max_score_psi": None, "min_feedback": 100}),
        ("v10 inverted labels, score PSI only", "v10", {}),
    ]
    with Target(REPO, env) as target:
        for name, canary, guardrails in cases:
            runs = [survival(target, rows, canary, guardrails) for _ in range(args.runs)]
            seconds = statistics.median(run[0] for run in runs)
            served = statistics.median(run[1] for run in runs)
            print(
                f"{name}: survived {seconds:.2f} s (median of {args.runs}), {served:.0f} canary requests; {runs[-1][2]}"
            )
        gaps = [takeover(target, rows) for _ in range(args.runs)]
        print(f"takeover after SIGKILL: {statistics.median(gaps):.2f} s = {statistics.median(gaps):.2f} intervals")


if __name__ == "__main__":
    main()
