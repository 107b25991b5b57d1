"""GET /v1/models: what is deployed, from the manifests."""

from __future__ import annotations

from flask import jsonify

from .common import state


def model_drift(version: str):
    """GET /v1/models/<version>/drift: PSI of live traffic against the training reference."""
    service = state()
    model = service.inference.model(version)
    return jsonify(service.inference.drift.report(model, service.settings.drift_psi_threshold))


def list_models():
    service = state()
    return jsonify(models=service.inference.describe(), canary_percent=service.inference.canary_percent)
