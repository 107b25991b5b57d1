"""Helpers every API view uses: the service state, body parsing, and the guards run before a view."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask import current_app, g, request
from marshmallow import Schema

from .. import metrics
from ..backpressure import overloaded, queue_wait
from ..errors import InvalidJsonError, NotReadyError, UnsupportedMediaTypeError
from ..readiness import STARTING
from ..state import ServiceState

# Probes, docs and metrics are never refused for load: the orchestrator must see the truth.
UNGUARDED_BLUEPRINTS = frozenset({"health", "docs", "metrics"})
UNGUARDED_ENDPOINTS = frozenset(
    {
        "oip.live",
        "oip.ready",
        "oip.server_metadata",
        "oip.model_metadata",
        "oip.model_version_metadata",
        "oip.model_ready",
    }
)


def state() -> ServiceState:
    return current_app.extensions["toxiserve"]


def load_body(schema: Schema) -> dict:
    """JSON object -> validated dict: 415 if not JSON, 400 INVALID_JSON if unparseable, INVALID_PAYLOAD if misshapen."""
    if not request.is_json:
        raise UnsupportedMediaTypeError("Content-Type must be application/json")
    raw = request.get_data(cache=False)  # werkzeug raises 413 past MAX_CONTENT_LENGTH, before we parse
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidJsonError("request body is not valid JSON") from None
    return schema.load(data)


def enter_in_flight() -> None:
    """App-wide before_request: refuse at once with 503 OVERLOADED a request that queued too long
    for a thread, or that finds no in-flight slot; otherwise take a slot."""
    if request.blueprint in UNGUARDED_BLUEPRINTS or request.endpoint in UNGUARDED_ENDPOINTS:
        return
    service = state()
    waited, bound = queue_wait(), service.settings.max_queue_wait
    if waited is not None and bound is not None and waited > bound:
        raise overloaded(f"request queued {waited * 1000:.0f} ms for this worker; retry shortly")
    if not service.in_flight.try_enter():
        raise overloaded("too many requests in flight; retry shortly")
    g.in_flight = True


def leave_in_flight(_exc: BaseException | None = None) -> None:
    if g.pop("in_flight", False):
        state().in_flight.leave()


def authenticate_and_limit() -> None:
    """before_request of the API blueprints: the key, then its rate limit, then readiness."""
    service = state()
    if service.auth_disabled:
        g.key_id = "anonymous"
    else:
        g.key_id = service.api_keys.authenticate(request.headers.get("X-API-Key"))
    decision = service.rate_limiter.check(g.key_id)
    if decision is not None:
        g.rate_limit_headers = decision.headers()
    if service.readiness.state == STARTING:
        raise NotReadyError("models are still loading")


def idempotent(request_id: str, payload: dict, compute: Callable[[], dict]) -> dict:
    """Run `compute` once per (key, request id); a replay returns the stored answer."""
    if not g.get("client_request_id"):
        return compute()  # an id we generated can never repeat: nothing to deduplicate
    response, replayed = state().idempotency.run_once(g.key_id, request_id, request.path, payload, compute)
    if replayed:
        g.replayed = True
        metrics.IDEMPOTENT_REPLAYS.inc()
    return response


def add_guard_headers(response):
    """after_request: rate-limit headers on every API answer, and the replay marker."""
    response.headers.update(g.get("rate_limit_headers") or {})
    if g.get("replayed"):
        response.headers["Idempotent-Replayed"] = "true"
    return response
