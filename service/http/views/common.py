"""Helpers every API view uses: the service state, the data plane, body parsing, the key check."""

from __future__ import annotations

import json

from flask import current_app, g, request
from marshmallow import Schema

from service.admission.auth import API_KEY_HEADER
from service.admission.deadline import peer_closed
from service.call import Call
from service.core.dataplane import DataPlane
from service.core.state import ServiceState
from service.errors import InvalidJsonError, PayloadTooLargeError, UnauthorizedError, UnsupportedMediaTypeError


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


def read_json():
    """The JSON body, read once: 415 if not JSON, 400 INVALID_JSON if unparseable (413 past the cap)."""
    if not request.is_json:
        raise UnsupportedMediaTypeError("Content-Type must be application/json")
    return parse_json(read_body())


def load_body(schema: Schema) -> dict:
    """JSON object -> validated dict: read_json's errors, or INVALID_PAYLOAD if misshapen."""
    return schema.load(read_json())


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


def call() -> Call:
    return g.call


def dataplane() -> DataPlane:
    return state().dataplane


def authenticate() -> None:
    """before_request of the API blueprints: the key, before anything else is read."""
    headers = request.headers
    check_key(dataplane(), g.call, headers.get(API_KEY_HEADER), "Authorization" in headers, client_address())


def check_key(plane: DataPlane, call: Call, key: str | None, sent_authorization: bool, address: str) -> None:
    """The data plane's key check, telling a client that sent only an Authorization header why it failed."""
    try:
        plane.authenticate(call, key, address)
    except UnauthorizedError as error:
        if key is None and sent_authorization:
            error.message += " (an Authorization header was sent; this API reads X-API-Key)"
        raise


def client_address() -> str:
    """The client's address: the peer's, or with TOXISERVE_PROXY_HOPS what the proxies report."""
    return request.remote_addr or "unknown"


def client_gone():
    """The check the data plane runs between chunks: has the client closed its connection?"""
    return peer_closed(request.environ.get("gunicorn.socket"))


def add_guard_headers(response):
    """after_request: `guard_headers` on every answer."""
    current = g.get("call")
    if current is not None:
        response.headers.update(guard_headers(current))
    return response


def guard_headers(call: Call) -> dict[str, str]:
    """Rate-limit headers on every admitted API answer, the rollout revision a routed one was
    answered under, and the replay marker."""
    headers = dict(call.retry_headers)
    if call.rollout_revision is not None:
        headers["X-Rollout-Revision"] = str(call.rollout_revision)
    if call.replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers
