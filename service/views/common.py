"""Helpers every API view uses: the service state, body parsing, and the guards run before a view."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask import current_app, g, request
from marshmallow import Schema

from .. import metrics
from ..backpressure import overloaded, queue_wait
from ..deadline import Deadline, peer_closed
from ..errors import InvalidJsonError, NotReadyError, PayloadTooLargeError, UnsupportedMediaTypeError
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


def read_body() -> bytes:
    """The request body, at most MAX_CONTENT_LENGTH bytes, else 413 PAYLOAD_TOO_LARGE.

    werkzeug refuses a declared Content-Length over the cap before reading, but silently cuts a
    chunked body (no Content-Length) at the cap: read one byte more than the cap to tell.
    """
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and "wsgi.input_terminated" in request.environ:
        raw = request.environ["wsgi.input"].read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLargeError("request body is larger than the configured limit")
        return raw
    return request.get_data(cache=False)


def load_body(schema: Schema) -> dict:
    """JSON object -> validated dict: 415 if not JSON, 400 INVALID_JSON if unparseable, INVALID_PAYLOAD if misshapen."""
    if not request.is_json:
        raise UnsupportedMediaTypeError("Content-Type must be application/json")
    return schema.load(parse_json(read_body()))


def parse_json(raw: bytes):
    """JSON text -> value; 400 INVALID_JSON saying where it broke, or that it nests too deeply."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidJsonError(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:
        raise InvalidJsonError("request body is not valid JSON (not UTF-8)") from None
    except RecursionError:
        # The parser recurses once per level; past Python's recursion limit (~1,000 levels) it gives up.
        raise InvalidJsonError("request body nests too deeply") from None


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


def authenticate() -> None:
    """before_request of the API blueprints: the key, then readiness. The rate limit comes once the
    body is parsed (`admit`), because a request costs one unit per text."""
    service = state()
    if service.auth_disabled:
        g.key_id = "anonymous"
    else:
        g.key_id = service.api_keys.authenticate(request.headers.get("X-API-Key"))
    if service.readiness.state == STARTING:
        raise NotReadyError("models are still loading")


def admit(text_count: int) -> Deadline:
    """A parsed request: charge its key one rate-limit unit per text; its compute deadline."""
    service = state()
    decision = service.rate_limiter.check(g.key_id, text_count)
    if decision is not None:
        g.rate_limit_headers = decision.headers()
    return Deadline(service.settings.request_deadline, peer_closed(request.environ.get("gunicorn.socket")))


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
