"""Feedback: a label for a request the service answered, joined to what it actually answered.

`POST /v1/feedback` with `{"request_id", "label": "toxic"|"clean"}` (or `{"items": [...]}`), sent
with the key that made the request. The answer is read from that key's idempotency record (so only
requests sent with a `request_id` can be labelled, for as long as their answer is kept:
TOXISERVE_IDEMPOTENCY_TTL), never from the client: the version, label and score are what the service
said. The first label for a request stands; a second is 409 FEEDBACK_CONFLICT. Counts per (version,
rollout revision, predicted, actual) live in the shared store, so every host's labels count.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from service.observability import metrics
from service.rollout.quality import INTERVALS, LABELS, report
from shared_features.errors import ToxiserveError, UnprocessableError


class UnknownRequestError(ToxiserveError):
    """No answer is stored for this request id under this key (never sent with an id, or expired)."""

    status, error_code = 404, "UNKNOWN_REQUEST"


class FeedbackConflictError(ToxiserveError):
    """This request already has a label; the first one stands."""

    status, error_code = 409, "FEEDBACK_CONFLICT"


class Feedback:
    def __init__(self, store, policy, ttl: float, revision) -> None:
        self.store, self.policy, self.ttl = store, policy, ttl
        self.revision = revision  # () -> the rollout revision now: the "current step" labels count in

    def _strict(self, operation: str, function, *args):
        """A failed store is 503 even when failing open: a label is never reported unknown, or accepted, on a guess."""
        return self.policy.call(operation, function, *args, strict=True)

    def give(self, key_id: str, request_id: str, label: str) -> dict:
        key = f"{key_id}:{request_id}"
        stored = self._strict("feedback", self.store.idempotency.answer, key)
        if stored is None:
            raise UnknownRequestError(
                f"no answer is kept for request_id {request_id!r} under this key: only requests sent with a "
                "request_id can be labelled, until their answer expires",
                details={"request_id": [request_id]},
            )
        answer = json.loads(stored)
        if "label" not in answer or "score" not in answer or "model_version" not in answer:
            raise UnprocessableError(
                "that request was a batch (or an OIP call): feedback labels one-text answers from /predict, "
                "/v1|/v2/predict or /v1/models/<version>/predict",
                details={"request_id": [request_id]},
            )
        version, predicted = answer["model_version"], answer["label"]
        revision = self.revision()
        entry = {
            "request_id": request_id,
            "label": label,
            "model_version": version,
            "predicted": predicted,
            "score": answer["score"],
            "revision": revision,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        cell = f"{revision}|{predicted}|{label}"
        if not self._strict("feedback", self.store.feedback.record, key, entry, self.ttl, version, cell):
            raise FeedbackConflictError(
                f"request_id {request_id!r} already has a label; the first one stands",
                details={"request_id": [request_id]},
            )
        metrics.child(metrics.FEEDBACK, version, predicted, label).inc()
        return {"request_id": request_id, "status": "accepted", "model_version": version, "predicted": predicted}

    def _matrix(self, counts: dict[str, int], revisions) -> dict[str, dict[str, int]]:
        """matrix[predicted][actual] of the counted cells whose revision satisfies `revisions`."""
        cells = {p: dict.fromkeys(LABELS, 0) for p in LABELS}
        for cell, n in counts.items():
            revision, predicted, actual = cell.split("|")
            if predicted in cells and actual in LABELS and revisions(int(revision)):
                cells[predicted][actual] += n
        return cells

    def matrix(self, version: str, first: int, last: int) -> dict[str, dict[str, int]]:
        """matrix[predicted][actual]: the labels received under rollout revisions first..last."""
        counts = self._strict("feedback", self.store.feedback.counts, version)
        return self._matrix(counts, lambda revision: first <= revision <= last)

    def quality(self, version: str, revision: int) -> dict:
        """All time, and the labels received under `revision` (the rollout's current step)."""
        counts = self._strict("feedback", self.store.feedback.counts, version)
        return {
            "model_version": version,
            "intervals": INTERVALS,
            "all_time": report(self._matrix(counts, lambda _: True)),
            "current_revision": {"revision": revision, **report(self._matrix(counts, lambda r: r == revision))},
        }
