"""/v1 and /v2: the same views, bound to different model versions by configuration."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from ..inference import Prediction
from ..request_context import adopt_request_id
from ..schemas import BatchPredictRequestSchema, PredictRequestSchema
from .common import load_body, require_api_key, require_ready, state

_predict_schema = PredictRequestSchema()
_batch_schema = BatchPredictRequestSchema()


def prediction_body(prediction: Prediction, request_id: str) -> dict:
    return {
        "label": prediction.label,
        "score": prediction.score,
        "model_version": prediction.model_version,
        "request_id": request_id,
    }


def predict_one(version_of) -> dict:
    """Parse, pick the version (`version_of(request_id)`), score one text. Shared with the canary router."""
    body = load_body(_predict_schema)
    request_id = adopt_request_id(body.get("request_id"))
    g.text_length = len(body["text"])
    version = version_of(request_id)
    g.model_version = version
    prediction = state().inference.predict(body["text"], version)
    return prediction_body(prediction, request_id)


def version_blueprint(api_version: str, model_version: str) -> Blueprint:
    """One blueprint per API version; `model_version` is the artifact it serves."""
    bp = Blueprint(api_version, __name__, url_prefix=f"/{api_version}")
    bp.before_request(require_api_key)
    bp.before_request(require_ready)

    @bp.post("/predict")
    def predict():
        return jsonify(predict_one(lambda _request_id: model_version))

    @bp.post("/batch_predict")
    def batch_predict():
        body = load_body(_batch_schema)
        request_id = adopt_request_id(body.get("request_id"))
        g.text_count = len(body["texts"])
        g.model_version = model_version
        predictions = state().inference.predict_batch(body["texts"], model_version)
        return jsonify(results=[p.as_result() for p in predictions], model_version=model_version, request_id=request_id)

    return bp
