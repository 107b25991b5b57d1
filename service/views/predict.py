"""/v1 and /v2: the same views, bound to different model versions by configuration."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, g, jsonify

from ..request_context import adopt_request_id
from ..schemas import BatchPredictRequestSchema, PredictRequestSchema
from .common import admit, authenticate, idempotent, load_body, state

_predict_schema = PredictRequestSchema()
_batch_schema = BatchPredictRequestSchema()


def predict_one(version_of: Callable[[str], str]) -> dict:
    """Parse, pick the version (`version_of(request_id)`), score one text. Shared with the canary router."""
    body = load_body(_predict_schema)
    request_id = adopt_request_id(body.get("request_id"))
    g.text_length = len(body["text"])
    deadline = admit(1)

    def compute() -> dict:
        prediction = state().inference.predict(body["text"], version_of(request_id), deadline)
        return {
            "label": prediction.label,
            "score": prediction.score,
            "model_version": prediction.model_version,
            "request_id": request_id,
        }

    response = idempotent(request_id, body, compute)
    g.model_version = response["model_version"]
    return response


def batch_predict(model_version: str) -> dict:
    body = load_body(_batch_schema)
    request_id = adopt_request_id(body.get("request_id"))
    g.text_count = len(body["texts"])
    g.model_version = model_version
    deadline = admit(len(body["texts"]))

    def compute() -> dict:
        predictions = state().inference.predict_batch(body["texts"], model_version, deadline)
        return {
            "results": [p.as_result() for p in predictions],
            "model_version": model_version,
            "request_id": request_id,
        }

    return idempotent(request_id, body, compute)


def version_blueprint(api_version: str, model_version: str) -> Blueprint:
    """One blueprint per API version; `model_version` is the artifact it serves."""
    bp = Blueprint(api_version, __name__, url_prefix=f"/{api_version}")
    bp.before_request(authenticate)
    bp.add_url_rule("/predict", "predict", lambda: jsonify(predict_one(lambda _rid: model_version)), methods=["POST"])
    bp.add_url_rule("/batch_predict", "batch_predict", lambda: jsonify(batch_predict(model_version)), methods=["POST"])
    return bp
