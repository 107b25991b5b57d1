"""GET /v1/models: what is deployed, from the manifests."""

from __future__ import annotations

from flask import jsonify

from .common import state


def list_models():
    service = state()
    return jsonify(models=service.inference.describe(), canary_percent=service.inference.canary_percent)
