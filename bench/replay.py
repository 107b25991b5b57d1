"""Replay labeled traffic: real tweets through the router, each with a request id, and (with
--feedback) each answer's true label sent back with the same key, as a labelling team would.

    export TOXISERVE_API_KEY=demo-key-0123456789
    .venv/bin/python -m bench.replay --url http://127.0.0.1:8000 --seconds 60 --feedback

For trying automatic rollouts (docs/rollouts.md, Automatic rollouts) and for bench.controller_bench. It
stops after --seconds or --requests, whichever comes first, and prints what it sent and what
answered. Only ever point it at a service of your own.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import requests

from .common import DATASET


def labeled_tweets(path: Path = DATASET, seed: int = 5) -> list[tuple[str, str]]:
    """(text, "toxic" | "clean") for every row of the dataset, shuffled."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [(row["text"], "toxic" if row["label"] == "1" else "clean") for row in csv.DictReader(handle)]
    random.Random(seed).shuffle(rows)
    return rows


class Replay:
    """Client threads replaying `rows` against `urls` until stopped, `seconds` pass or `requests` are sent."""

    def __init__(
        self,
        urls: list[str],
        key: str,
        rows: list[tuple[str, str]],
        threads: int = 2,
        feedback: bool = False,
        seconds: float = 60,
        requests_limit: int | None = None,
    ) -> None:
        self.urls, self.key, self.rows, self.feedback = urls, key, rows, feedback
        self.deadline = time.monotonic() + seconds
        self.tickets = itertools.count() if requests_limit is None else iter(range(requests_limit))
        self.statuses: Counter = Counter()
        self.versions: Counter = Counter()
        self.labels: Counter = Counter()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(threads)]

    def _send(self, n: int) -> None:
        headers = {"X-API-Key": self.key}
        url = self.urls[n % len(self.urls)]
        with requests.Session() as session:
            for ticket in self.tickets:
                if self.stopped.is_set() or time.monotonic() > self.deadline:
                    return
                text, label = self.rows[ticket % len(self.rows)]
                request_id = uuid.uuid4().hex
                try:
                    answer = session.post(
                        f"{url}/predict", json={"text": text, "request_id": request_id}, headers=headers, timeout=30
                    )
                except requests.RequestException:
                    self.statuses["unreachable"] += 1
                    time.sleep(0.2)
                    continue
                self.statuses[answer.status_code] += 1
                if answer.status_code != 200:
                    continue
                self.versions[answer.json()["model_version"]] += 1
                if self.feedback:
                    given = session.post(
                        f"{url}/v1/feedback",
                        json={"request_id": request_id, "label": label},
                        headers=headers,
                        timeout=30,
                    )
                    self.labels[given.status_code] += 1

    def start(self) -> Replay:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.join()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()

    def __enter__(self) -> Replay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> str:
        sent = sum(self.statuses.values())
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(self.versions.items()))
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items(), key=str))
        line = f"sent {sent} requests ({statuses}); answered by {versions or 'none'}"
        if self.feedback:
            line += f"; {self.labels[202]} labels accepted"
        return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", action="append", help="a service (repeat for several hosts; default: $TOXISERVE_URL, else port 8000)"
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--requests", type=int, help="stop after this many requests")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--feedback", action="store_true", help="send each answer's true label")
    parser.add_argument("--data", type=Path, default=DATASET, help="labeled CSV (text,label)")
    args = parser.parse_args()
    key = os.environ.get("TOXISERVE_API_KEY")
    if not key:
        parser.error("set TOXISERVE_API_KEY to a key of the service")
    replay = Replay(
        args.url or [os.environ.get("TOXISERVE_URL", "http://127.0.0.1:8000")],
        key,
        labeled_tweets(args.data),
        args.threads,
        args.feedback,
        args.seconds,
        args.requests,
    )
    replay.start().join()
    print(replay.summary())


if __name__ == "__main__":
    main()
