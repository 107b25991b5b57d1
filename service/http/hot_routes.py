"""The scoring routes' fast lane: POST /v1|v2/predict, /v1|v2/batch_predict, /predict and
/v1/models/<version>/predict|batch_predict, answered without Flask's per-request machinery.

A scoring request spent more time in Flask (request and app contexts, URL matching, hooks, the
Response object and its headers) than in the model. These routes need none of it: this WSGI layer,
in front of the Flask app, answers them with the same steps the Flask views take (the same Call,
key check, JSON parser, schema, data plane, answer and error bodies, guard headers, log line and
metrics), so each answer is the one the Flask route gives, byte for byte. Anything else goes to
Flask unchanged, and so does any request of these routes that needs more than the common case:
a body that is not plain JSON with a Content-Length within the cap (415 and 413 are Flask's),
tracing on (its spans live in Flask's hooks), or debug mode (indented JSON).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from functools import partial
from typing import Any

from flask.json.provider import DefaultJSONProvider
from marshmallow import Schema, ValidationError
from werkzeug.http import HTTP_STATUS_CODES

from service.admission.auth import API_KEY_HEADER
from service.admission.deadline import peer_closed
from service.errors import InternalError, error_body, invalid_payload
from service.http.views.common import check_key, guard_headers, parse_json
from service.http.views.predict import BATCH_SCHEMA, PREDICT_SCHEMA, score_batch, score_one
from service.observability import tracing
from service.observability.logs import record_request
from service.request_context import (
    IDEMPOTENCY_KEY_HEADER,
    REQUEST_ID_HEADER,
    bind_call,
    echoed_id,
    new_call,
    unbind_call,
)
from shared_features.errors import ToxiserveError

log = logging.getLogger(__name__)

_KEY = "HTTP_" + API_KEY_HEADER.upper().replace("-", "_")
_CORRELATION = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
_IDEMPOTENCY = "HTTP_" + IDEMPOTENCY_KEY_HEADER.upper().replace("-", "_")
# /v1/models/<version>/predict: a version as the rollout names versions; anything else is Flask's.
_MODEL_PATH = re.compile(r"/v1/models/([A-Za-z0-9._-]+)/(predict|batch_predict)")


class HotRoute:
    """One route: its label (the Flask rule, for metrics and logs), schema and answer."""

    def __init__(self, rule: str, schema: Schema, answer: Callable[..., dict], version: str | None) -> None:
        self.rule, self.schema, self.answer, self.version = rule, schema, answer, version


_SINGLE, _BATCH = (PREDICT_SCHEMA, score_one), (BATCH_SCHEMA, score_batch)
FIXED_ROUTES = {
    "/v1/predict": HotRoute("/v1/predict", *_SINGLE, "v1"),
    "/v2/predict": HotRoute("/v2/predict", *_SINGLE, "v2"),
    "/v1/batch_predict": HotRoute("/v1/batch_predict", *_BATCH, "v1"),
    "/v2/batch_predict": HotRoute("/v2/batch_predict", *_BATCH, "v2"),
    "/predict": HotRoute("/predict", *_SINGLE, None),  # the canary router
}
MODEL_ROUTES = {
    "predict": ("/v1/models/<version>/predict", _SINGLE),
    "batch_predict": ("/v1/models/<version>/batch_predict", _BATCH),
}


def _route(path: str) -> HotRoute | None:
    route = FIXED_ROUTES.get(path)
    if route is None and path.startswith("/v1/models/"):
        match = _MODEL_PATH.fullmatch(path)
        if match:
            rule, (schema, answer) = MODEL_ROUTES[match.group(2)]
            route = HotRoute(rule, schema, answer, match.group(1))
    return route


def _is_plain_json(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "application/json"


class HotRoutes:
    """WSGI middleware: the scoring routes' common case here, everything else to `flask_wsgi`."""

    def __init__(self, flask_wsgi, app) -> None:
        self.flask_wsgi = flask_wsgi
        self.app = app
        self.plane = app.extensions["toxiserve"].dataplane
        self.max_body = app.config["MAX_CONTENT_LENGTH"]
        self.dumps = json_encoder(app)

    def __call__(self, environ: dict, start_response) -> Any:
        route = _route(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        length = environ.get("CONTENT_LENGTH") or ""
        if (
            route is None
            or not length.isdigit()
            or (self.max_body is not None and int(length) > self.max_body)
            or not _is_plain_json(environ.get("CONTENT_TYPE", ""))
            or tracing.enabled()
            or self.app.debug
        ):
            return self.flask_wsgi(environ, start_response)
        call = new_call(environ.get(_CORRELATION), environ.get(_IDEMPOTENCY))
        token = bind_call(call)  # log lines written while scoring carry the request id
        try:
            status, body, headers = self._answer(route, call, environ, int(length))
            headers.update(guard_headers(call))
            headers[REQUEST_ID_HEADER] = echoed_id(call)
            record_request(call, route.rule, "POST", status)
        finally:
            unbind_call(token)
        data = f"{self.dumps(body)}\n".encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers.items()]
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", headers)
        return [data]

    def _answer(self, route: HotRoute, call, environ: dict, length: int) -> tuple[int, dict, dict]:
        """(status, body, headers): the answer, or the error body Flask's handlers would give."""
        try:
            check_key(self.plane, call, environ.get(_KEY), "HTTP_AUTHORIZATION" in environ, _address(environ))
            body = route.schema.load(parse_json(environ["wsgi.input"].read(length)))
            gone = peer_closed(environ.get("gunicorn.socket"))
            return 200, route.answer(self.plane, call, body, route.version, environ["PATH_INFO"], gone), {}
        except ValidationError as error:
            return self._error(call, invalid_payload(error))
        except ToxiserveError as error:
            return self._error(call, error)
        except Exception as exc:
            log.exception("unhandled error: %s", type(exc).__name__)
            return self._error(call, InternalError("internal error"))

    @staticmethod
    def _error(call, error: ToxiserveError) -> tuple[int, dict, dict]:
        call.error_code = error.error_code  # for the request log line
        return error.status, error_body(error, call.request_id), dict(getattr(error, "headers", None) or {})


def json_encoder(app) -> Callable[[Any], str]:
    """Flask's JSON provider's `dumps`, compact, as jsonify writes a body: for Flask's own provider,
    one encoder built once (json.dumps with options builds a JSONEncoder per call); the same text."""
    provider = app.json
    if type(provider) is not DefaultJSONProvider:
        return partial(provider.dumps, separators=(",", ":"))
    encoder = json.JSONEncoder(
        default=provider.default,
        ensure_ascii=provider.ensure_ascii,
        sort_keys=provider.sort_keys,
        separators=(",", ":"),
    )
    return encoder.encode


def _address(environ: dict) -> str:
    return environ.get("REMOTE_ADDR") or "unknown"  # as Flask's request.remote_addr, after ProxyFix
