"""GET /v1/models: what is deployed, from the manifests."""

from __future__ import annotations

from flask import jsonify

from service.http.views.common import dataplane, state


def model_drift(version: str):
    """GET /v1/models/<version>/drift: PSI of live traffic against the training reference."""
    inference = dataplane().inference()
    return jsonify(inference.drift.report(inference.model(version), state().settings.drift_psi_threshold))


def list_models():
    dataplane().inference()  # 503 while loading
    service = state()
    return jsonify(models=service.describe_models(), canary_percent=service.rollout.current.canary_percent)
