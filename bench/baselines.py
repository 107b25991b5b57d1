"""Baseline apps for the online benchmark, served by the same gunicorn config as the service.

- `bare_model_app()`: Flask calling the trained scikit-learn pipeline's predict_proba (read from
  model.joblib with joblib), with no validation, auth, rate limit, idempotency, logging or metrics:
  what putting the model behind Flask costs, the way most people first do it.
- `constant_app()`: Flask returning a constant: the framework ceiling.
"""

from __future__ import annotations

import json

import joblib
from flask import Flask, Response, request

from shared_features import ModelRegistry

ROUTES = ("/v1/predict", "/predict")


def bare_model_app() -> Flask:
    app = Flask(__name__)
    registry = ModelRegistry()
    threshold = registry.manifest("toxicity", "v1")["threshold"]
    pipeline = joblib.load(registry.path("toxicity", "v1") / "model.joblib")

    def predict():
        score = float(pipeline.predict_proba([json.loads(request.get_data())["text"]])[0, 1])
        return {"label": "toxic" if score >= threshold else "clean", "score": score, "model_version": "v1"}

    def batch_predict():
        scores = pipeline.predict_proba(json.loads(request.get_data())["texts"])[:, 1]
        return {
            "results": [{"label": "toxic" if s >= threshold else "clean", "score": float(s)} for s in scores],
            "model_version": "v1",
        }

    for route in ROUTES:
        app.add_url_rule(route, route, predict, methods=["POST"])
    app.add_url_rule("/v1/batch_predict", "batch", batch_predict, methods=["POST"])
    app.add_url_rule("/readyz", "readyz", lambda: {"status": "ready"})
    return app


def constant_app() -> Flask:
    app = Flask(__name__)
    body = json.dumps({"label": "clean", "score": 0.5, "model_version": "v1", "request_id": "x"})

    def constant():
        return Response(body, mimetype="application/json")

    for route in (*ROUTES, "/v1/batch_predict"):
        app.add_url_rule(route, route, constant, methods=["POST"])
    app.add_url_rule("/readyz", "readyz", lambda: {"status": "ready"})
    return app
