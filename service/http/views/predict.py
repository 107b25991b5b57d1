"""Scoring routes: /v1 and /v2 (the two legacy fixed routes, bound to model versions v1 and v2),
and /v1/models/<version>/predict|batch_predict, the same views for any version the rollout names."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from service.call import Call
from service.core.dataplane import DataPlane, batch_answer, one_answer
from service.core.inference import Detail
from service.core.schemas import BatchPredictRequestSchema, PredictRequestSchema
from service.http.views.common import authenticate, call, client_gone, dataplane, load_body
from service.request_context import adopt_ids

PREDICT_SCHEMA = PredictRequestSchema()
BATCH_SCHEMA = BatchPredictRequestSchema()


def predict_one(model_version: str | None) -> dict:
    """Parse and score one text with `model_version` (None: the canary router). Shared with /predict."""
    body = load_body(PREDICT_SCHEMA)
    return score_one(dataplane(), call(), body, model_version, request.path, client_gone())


def batch_predict(model_version: str) -> dict:
    body = load_body(BATCH_SCHEMA)
    return score_batch(dataplane(), call(), body, model_version, request.path, client_gone())


# The two answers from a validated body, for the Flask views and the fast lane (hot_routes) alike.
def score_one(plane: DataPlane, call: Call, body: dict, model_version: str | None, path: str, gone) -> dict:
    adopt_ids(call, body.get("request_id"))
    detail = Detail(body["categories"], body["explain"])
    return plane.score(call, [body["text"]], model_version, path, one_answer, True, gone, detail=detail)


def score_batch(plane: DataPlane, call: Call, body: dict, model_version: str, path: str, gone) -> dict:
    adopt_ids(call, body.get("request_id"))
    per_item = body["on_error"] == "item"
    detail = Detail(body["categories"], body["explain"])
    return plane.score(call, body["texts"], model_version, path, batch_answer, False, gone, per_item, detail)


def predict_version(version: str):
    return jsonify(predict_one(version))


def batch_predict_version(version: str):
    return jsonify(batch_predict(version))


def version_blueprint(api_version: str, model_version: str) -> Blueprint:
    """One blueprint per API version; `model_version` is the artifact it serves."""
    bp = Blueprint(api_version, __name__, url_prefix=f"/{api_version}")
    bp.before_request(authenticate)
    bp.add_url_rule("/predict", "predict", lambda: jsonify(predict_one(model_version)), methods=["POST"])
    bp.add_url_rule("/batch_predict", "batch_predict", lambda: jsonify(batch_predict(model_version)), methods=["POST"])
    return bp
