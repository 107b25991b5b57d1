"""POST /predict: the canary router. A stable hash of the request id picks the arm (in the data plane)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from service.http.views.common import authenticate
from service.http.views.predict import predict_one

bp = Blueprint("router", __name__)
bp.before_request(authenticate)


@bp.post("/predict")
def predict():
    return jsonify(predict_one(None))
