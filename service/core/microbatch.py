"""Opt-in micro-batching (TOXISERVE_MICROBATCH): single-text requests in one worker share a model call.

Request threads enqueue their normalised text and wait; one batching thread per worker process
takes up to `max_batch_size` texts, waiting at most `max_wait_ms` after the first, and scores each
model version's share in one vectorised call. It pays when a model's per-call overhead is large
next to its per-text cost (sklearn's predict_proba: ~600 us per call); with the compiled scorer it
only adds waiting (see docs/performance.md). A full queue answers 503 OVERLOADED at once.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future

from service.admission.backpressure import overloaded
from service.observability import metrics

QUEUE_WAIT = metrics.Histogram(
    "microbatch_queue_wait_seconds", "Time a text waited for its micro-batch", buckets=metrics.LATENCY_BUCKETS
)


class MicroBatcher:
    def __init__(self, score_batch, max_batch_size: int = 32, max_wait_ms: float = 2.0, max_queue: int = 256) -> None:
        self.score_batch = score_batch  # (version, normalised, raw) -> list of scores
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._owner_pid: int | None = None
        self._lock = threading.Lock()

    def _ensure_thread(self) -> None:
        # Threads don't survive fork: start one per process, on first use (never in the preloading master).
        if self._owner_pid != os.getpid():
            with self._lock:
                if self._owner_pid != os.getpid():
                    self._queue = queue.Queue(maxsize=self._queue.maxsize)
                    threading.Thread(target=self._run, name="microbatcher", daemon=True).start()
                    self._owner_pid = os.getpid()

    def score(self, version: str, normalised: str, raw: str, timeout: float = 30.0) -> float:
        self._ensure_thread()
        future: Future = Future()
        try:
            self._queue.put_nowait((version, normalised, raw, future, time.perf_counter()))
        except queue.Full:
            raise overloaded("micro-batch queue is full; retry shortly") from None
        return future.result(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            now = time.perf_counter()
            by_version: dict[str, list] = {}
            for item in batch:
                QUEUE_WAIT.observe(now - item[4])
                by_version.setdefault(item[0], []).append(item)
            for version, items in by_version.items():
                try:
                    scores = self.score_batch(version, [i[1] for i in items], [i[2] for i in items])
                except BaseException as exc:  # hand the failure to every waiting request
                    for item in items:
                        item[3].set_exception(exc)
                    continue
                for item, score in zip(items, scores, strict=True):
                    item[3].set_result(score)
