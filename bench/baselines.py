"""Baseline apps for the online benchmark, served by the same gunicorn config as the service.

- `bare_model_app()`: Flask calling the same pipeline's predict_proba, with no validation, auth,
  rate limit, idempotency, logging or metrics: the cost of a bare model behind Flask.
- `constant_app()`: Flask returning a constant: the framework ceiling.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request

from shared_features import ModelRegistry

ROUTES = ("/v1/predict", "/predict")


def bare_model_app() -> Flask:
    app = Flask(__name__)
    model = ModelRegistry().load("toxicity", "v1")
    threshold = model.threshold

    def predict():
        score = float(model.pipeline.predict_proba([json.loads(request.get_data())["text"]])[0, 1])
        return {"label": "toxic" if score >= threshold else "clean", "score": score, "model_version": "v1"}

    def batch_predict():
        scores = model.pipeline.predict_proba(json.loads(request.get_data())["texts"])[:, 1]
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
