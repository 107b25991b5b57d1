"""Shadow scoring: a share of routed requests is scored again by the shadow version, off the request
path, and compared with what the client was told. Shadow results never reach the client.

Each worker has one bounded queue and one thread. The request thread only enqueues (a full queue
drops the item and counts it: shadowing must never slow or fail the answer); the thread scores,
then records label agreement and the score difference per (primary, shadow) pair in Prometheus,
which `GET /admin/rollout/shadow` summarises across workers.

The shadow thread uses only quiet time: it scores while its worker has had no request in flight
for QUIET_SECONDS, one text at a time, yielding the GIL after each, and at the lowest CPU priority
(Linux nice 19 for that thread alone). A request arriving meanwhile waits for at most the one text
being shadowed. Under sustained load there is no quiet time: the queue fills and shadowing is
dropped and counted, which is the point: the primary's latency comes first.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from service.observability import metrics

log = logging.getLogger(__name__)


QUIET_SECONDS = 0.002  # a worker idle this long is between requests, not about to get one back
MAX_QUEUED_CHARS = 4_000_000  # ~16 MiB of queued text per worker, whatever the batch sizes


class ShadowScorer:
    def __init__(
        self,
        models: Callable[[], dict],
        max_queue: int,
        busy: Callable[[], bool] = lambda: False,
        on_compared: Callable[[int, int, int], None] = lambda revision, compared, agreed: None,
    ) -> None:
        self.models = models  # () -> the loaded models now (the rollout swaps them)
        self.busy = busy  # () -> True while this worker has a request in flight
        self.on_compared = on_compared  # (revision, compared, agreed): the rollout controller's evidence
        self.queue: queue.Queue = queue.Queue(max_queue)
        self._queued_chars = 0
        self._lock = threading.Lock()
        self._pid: int | None = None

    def submit(
        self, shadow: str, primary: str, texts: list[str], scores: list[float], threshold: float, revision: int
    ) -> None:
        if self._pid != os.getpid():  # threads don't survive a fork: one per worker, started on first use
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="toxiserve-shadow", daemon=True).start()
        chars = sum(map(len, texts))
        with self._lock:
            if self._queued_chars + chars > MAX_QUEUED_CHARS or self.queue.full():
                metrics.child(metrics.SHADOW_DROPPED, "queue_full").inc()
                return
            self._queued_chars += chars
            self.queue.put_nowait((shadow, primary, texts, scores, threshold, revision))

    def _run(self) -> None:
        try:  # Linux applies a nice value to one thread: the CPU goes to requests first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while True:
            shadow, primary, texts, scores, threshold, revision = self.queue.get()
            with self._lock:
                self._queued_chars -= sum(map(len, texts))
            try:
                agreed = self._compare(shadow, primary, texts, scores, threshold)
                if agreed is not None:
                    self.on_compared(revision, len(texts), agreed)
            except Exception:  # a shadow that fails must not stop the thread; the client never knew
                metrics.child(metrics.SHADOW_DROPPED, "failed").inc()
                log.exception("shadow scoring with %s failed", shadow)

    def _compare(
        self, shadow: str, primary: str, texts: list[str], scores: list[float], threshold: float
    ) -> int | None:
        """Score `texts` with the shadow; how many labels agreed (None: not compared)."""
        model = self.models().get(shadow)
        if model is None:  # unloaded since the request was routed
            metrics.child(metrics.SHADOW_DROPPED, "not_loaded").inc()
            return None
        agree = metrics.child(metrics.SHADOW_COMPARED, primary, shadow, "agree")
        disagree = metrics.child(metrics.SHADOW_COMPARED, primary, shadow, "disagree")
        difference = metrics.child(metrics.SHADOW_SCORE_DIFFERENCE, primary, shadow)
        agreed = 0
        for text, primary_score in zip(texts, scores, strict=True):
            while self.busy():
                time.sleep(0.001)  # requests first
            shadow_score = float(model.score([text])[0])
            time.sleep(0)  # hand the GIL to a request that arrived meanwhile
            same = (primary_score >= threshold) == (shadow_score >= model.threshold)
            (agree if same else disagree).inc()
            agreed += same
            difference.observe(abs(shadow_score - primary_score))
        return agreed


def summary() -> dict:
    """Per (primary, shadow) pair, across workers: texts compared, agreement, mean |score difference|."""
    compared = metrics.read_counter("shadow_compared")
    sums = metrics.read_samples("shadow_score_difference", "_sum")
    pairs: dict[tuple[str, str], dict] = {}
    for labels, value in compared.items():
        found = dict(labels)
        pair = pairs.setdefault((found["primary"], found["shadow"]), {"agree": 0, "disagree": 0})
        pair[found["agreement"]] += int(value)
    described = []
    for (primary, shadow), counts in sorted(pairs.items()):
        total = counts["agree"] + counts["disagree"]
        difference = sums.get((("primary", primary), ("shadow", shadow)), 0.0)
        described.append(
            {
                "primary": primary,
                "shadow": shadow,
                "compared": total,
                "agreement": round(counts["agree"] / total, 6) if total else None,
                "mean_abs_score_difference": round(difference / total, 6) if total else None,
            }
        )
    dropped = {dict(labels)["reason"]: int(value) for labels, value in metrics.read_counter("shadow_dropped").items()}
    return {"pairs": described, "dropped": dropped}
