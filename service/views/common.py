"""Helpers every view uses: the service state, JSON body parsing, readiness and auth gates."""

from __future__ import annotations

import json

from flask import current_app, g, request
from marshmallow import Schema

from ..errors import InvalidJsonError, NotReadyError, UnauthorizedError, UnsupportedMediaTypeError
from ..readiness import STARTING
from ..state import ServiceState


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


def require_api_key() -> None:
    """before_request of the API blueprints."""
    service = state()
    if service.auth_disabled:
        g.key_id = "anonymous"
        return
    key_id = service.api_keys.identify(request.headers.get("X-API-Key"))
    if key_id is None:
        # The same message whether the key is missing or wrong: no oracle for guessing.
        raise UnauthorizedError("missing or invalid API key")
    g.key_id = key_id


def require_ready() -> None:
    if state().readiness.state == STARTING:
        raise NotReadyError("models are still loading")
