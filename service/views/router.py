"""POST /predict: the canary router. A stable hash of the request id picks the arm."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from .common import authenticate, state
from .predict import predict_one

bp = Blueprint("router", __name__)
bp.before_request(authenticate)


def choose_arm(request_id: str) -> str:
    version, g.arm = state().route(request_id)  # the arm goes on the request's log line
    return version


@bp.post("/predict")
def predict():
    return jsonify(predict_one(choose_arm))
