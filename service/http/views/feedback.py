"""POST /v1/feedback and GET /v1/models/<version>/quality (rules on the v1 blueprint, after its key check)."""

from __future__ import annotations

from flask import g, jsonify

from service.core.schemas import FeedbackBatchSchema, FeedbackItemSchema
from service.errors import NotFoundError
from service.http.views.common import read_json, state
from shared_features.errors import ToxiserveError, UnprocessableError

_item, _batch = FeedbackItemSchema(), FeedbackBatchSchema()


def charge(service, labels: int) -> None:
    """Labels spend the key's rate limit like texts do: one unit each (a label is a store lookup and
    a write; unlimited, one key made 45,590 lookups a second)."""
    decision = service.rate_limiter.check(g.call.key_id, labels)
    if decision is not None:
        g.call.retry_headers = decision.headers()


def give_feedback():
    """One label (202 or its error), or a batch of up to TOXISERVE_MAX_BATCH_SIZE (202, a result per item)."""
    service = state()
    body = read_json()  # once, with the body cap and the nesting guard, whichever form it is
    if isinstance(body, dict) and "items" in body:
        items = _batch.load(body)["items"]
        limit = service.settings.max_batch_size
        if len(items) > limit:
            raise UnprocessableError(
                f"{len(items)} items exceed the limit of {limit}", details={"items": [f"at most {limit}"]}
            )
        charge(service, len(items))
        results = []
        for item in items:
            try:
                results.append(service.feedback.give(g.call.key_id, item["request_id"], item["label"]))
            except ToxiserveError as error:
                if error.status >= 500:
                    raise  # the store is down: nothing more can be recorded
                results.append(
                    {
                        "request_id": item["request_id"],
                        "status": "refused",
                        "error_code": error.error_code,
                        "message": error.message,
                    }
                )
        accepted = sum(result["status"] == "accepted" for result in results)
        return jsonify(accepted=accepted, results=results), 202
    item = _item.load(body)
    charge(service, 1)
    return jsonify(service.feedback.give(g.call.key_id, item["request_id"], item["label"])), 202


def model_quality(version: str):
    service = state()
    if version not in service.registry.versions(service.settings.model_name):
        raise NotFoundError(f"no model version {version!r} in the model directory")
    # The stored revision, not this process's view of it (which may lag by a poll).
    return jsonify(service.feedback.quality(version, service.rollout.seed_or_read().revision))
