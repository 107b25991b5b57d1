"""Liveness and readiness probes (no auth: the orchestrator calls them)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from service.core.readiness import READY, STORE_UNAVAILABLE
from service.http.views.common import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 only when this process can serve: models warm, not draining, and (failing closed) a
    usable store, so a load balancer stops sending traffic to a process that would refuse it."""
    service = state()
    status = service.readiness.state
    if status != READY:
        return jsonify(status=status), 503
    store = service.store_health()
    if not store["healthy"] and store["failure_mode"] == "closed":
        return jsonify(status=STORE_UNAVAILABLE, store=store), 503
    body = {"status": status, "models": service.model_summary(), "store": store}
    degraded = service.rollout_health()
    if degraded is not None:  # serving, so still 200: but less than the stored rollout names
        body["degraded"] = degraded
    return jsonify(body)
