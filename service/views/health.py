"""Liveness and readiness probes (no auth: the orchestrator calls them)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..readiness import READY
from .common import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    service = state()
    status = service.readiness.state
    if status != READY:
        return jsonify(status=status), 503
    return jsonify(status=status, models=service.model_summary())
