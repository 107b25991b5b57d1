"""Feedback: a label for a request the service answered, joined to what it actually answered.

`POST /v1/feedback` with `{"request_id", "label": "toxic"|"clean"}` (or `{"items": [...]}`), sent
with the key that made the request. The answer is read from that key's idempotency record (so only
requests sent with a `request_id` or an Idempotency-Key can be labelled, for as long as their answer is kept:
TOXISERVE_IDEMPOTENCY_TTL), never from the client: the version, label and score are what the service
said. The first label for a request stands; a second is 409 FEEDBACK_CONFLICT. Counts per (version,
rollout revision, predicted, actual) live in the shared store, so every host's labels count.

What a label may steer: only labels from keys with the `labeler` scope (TOXISERVE_LABELER_KEYS, which
the operator grants) on answers the router itself assigned count as rollout evidence, at the
revision the answer was routed under. Every other label (another key's, or one on an answer whose
version the client named) is kept and shown in quality, marked, and never steers a rollout: a client
cannot bank answers before a plan and label them into it, nor label its own arm choices.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from service.observability import metrics
from service.rollout.quality import INTERVALS, LABELS, report
from shared_features.errors import ToxiserveError, UnprocessableError

# What a label counts as: rollout evidence (a labeler's, on a routed answer), untrusted (another
# key's, on a routed answer), or direct (on an answer whose version the client named).
EVIDENCE, UNTRUSTED, DIRECT = "evidence", "untrusted", "direct"
KINDS = (EVIDENCE, UNTRUSTED, DIRECT)


class UnknownRequestError(ToxiserveError):
    """No answer is stored for this request id under this key (never sent with an id, or expired)."""

    status, error_code = 404, "UNKNOWN_REQUEST"


class FeedbackConflictError(ToxiserveError):
    """This request already has a label; the first one stands."""

    status, error_code = 409, "FEEDBACK_CONFLICT"


class Feedback:
    def __init__(self, store, policy, ttl: float, labelers: frozenset[str] = frozenset()) -> None:
        self.store, self.policy, self.ttl = store, policy, ttl
        self.labelers = labelers  # key ids whose labels on routed answers are rollout evidence

    def _strict(self, operation: str, function, *args):
        """A failed store is 503 even when failing open: a label is never reported unknown, or accepted, on a guess."""
        return self.policy.call(operation, function, *args, strict=True)

    def give(self, key_id: str, request_id: str, label: str) -> dict:
        key = f"{key_id}:{request_id}"
        stored = self._strict("feedback", self.store.idempotency.answer, key)
        if stored is None:
            raise UnknownRequestError(
                f"no answer is kept for request_id {request_id!r} under this key: only requests sent with a "
                "request_id (or Idempotency-Key) can be labelled, until their answer expires",
                details={"request_id": [request_id]},
            )
        answer = json.loads(stored)
        answered = answer.get("_answered") or {}  # absent in records kept before it existed
        if "label" not in answer or "score" not in answer or "model_version" not in answer:
            raise UnprocessableError(
                "that request was a batch (or an OIP call): feedback labels one-text answers from /predict, "
                "/v1|/v2/predict or /v1/models/<version>/predict",
                details={"request_id": [request_id]},
            )
        version, predicted = answer["model_version"], answer["label"]
        revision = int(answered.get("revision") or 0)
        kind = EVIDENCE if answered.get("routed") else DIRECT
        if kind == EVIDENCE and key_id not in self.labelers:
            kind = UNTRUSTED
        entry = {
            "request_id": request_id,
            "label": label,
            "model_version": version,
            "predicted": predicted,
            "score": answer["score"],
            "revision": revision,
            "counts_as": kind,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        cell = f"{revision}|{predicted}|{label}" + ("" if kind == EVIDENCE else f"|{kind}")
        if not self._strict("feedback", self.store.feedback.record, key, entry, self.ttl, version, cell):
            raise FeedbackConflictError(
                f"request_id {request_id!r} already has a label; the first one stands",
                details={"request_id": [request_id]},
            )
        metrics.child(metrics.FEEDBACK, version, predicted, label).inc()
        return {
            "request_id": request_id,
            "status": "accepted",
            "model_version": version,
            "predicted": predicted,
            "counts_as": kind,
        }

    def _matrix(self, counts: dict[str, int], revisions, kinds=KINDS) -> dict[str, dict[str, int]]:
        """matrix[predicted][actual] of the counted cells of `kinds` whose revision satisfies `revisions`."""
        cells = {p: dict.fromkeys(LABELS, 0) for p in LABELS}
        for cell, n in counts.items():
            revision, predicted, actual, *kind = cell.split("|")
            kind = kind[0] if kind else EVIDENCE
            if predicted in cells and actual in LABELS and kind in kinds and revisions(int(revision)):
                cells[predicted][actual] += n
        return cells

    def matrix(self, version: str, first: int, last: int) -> dict[str, dict[str, int]]:
        """matrix[predicted][actual]: the evidence labels on answers routed under revisions first..last."""
        counts = self._strict("feedback", self.store.feedback.counts, version)
        return self._matrix(counts, lambda revision: first <= revision <= last, (EVIDENCE,))

    def quality(self, version: str, revision: int) -> dict:
        """All time, and on answers under `revision` (the rollout's current step): every label, and
        apart, those that count as rollout evidence; with how many of each kind there are."""
        counts = self._strict("feedback", self.store.feedback.counts, version)
        everything = lambda _: True  # noqa: E731
        return {
            "model_version": version,
            "intervals": INTERVALS,
            "all_time": report(self._matrix(counts, everything)),
            "current_revision": {"revision": revision, **report(self._matrix(counts, lambda r: r == revision))},
            "rollout_evidence": report(self._matrix(counts, everything, (EVIDENCE,))),
            "labels_by_kind": {kind: _total(self._matrix(counts, everything, (kind,))) for kind in KINDS},
        }


def _total(matrix: dict[str, dict[str, int]]) -> int:
    return sum(sum(row.values()) for row in matrix.values())
