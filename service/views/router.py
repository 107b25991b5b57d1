"""POST /predict: the canary router. A stable hash of the request id picks the arm."""

from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify

from .common import authenticate_and_limit, state
from .predict import predict_one

bp = Blueprint("router", __name__)
bp.before_request(authenticate_and_limit)

log = logging.getLogger("toxiserve.router")


def choose_arm(request_id: str) -> str:
    inference = state().inference
    version = inference.choose_arm(request_id)
    g.arm = "canary" if version == inference.canary else "stable"
    state().on_canary_decision(g.arm, version)
    log.debug("routed", extra={"arm": g.arm, "model_version": version})
    return version


@bp.post("/predict")
def predict():
    return jsonify(predict_one(choose_arm))
