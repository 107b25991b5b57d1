"""Service errors and the one JSON error body: {"error_code", "message", "request_id"[, "details"]}.

Every failure leaves through `error_response`, whether raised by us, by werkzeug or by marshmallow,
so clients never see an HTML page or a stack trace.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from service.request_context import current_call, current_request_id
from shared_features.errors import ModelError, ToxiserveError, UnprocessableError

log = logging.getLogger(__name__)

__all__ = ["ToxiserveError", "UnprocessableError", "ModelError"]  # re-exported: one hierarchy


class InvalidJsonError(ToxiserveError):
    status, error_code = 400, "INVALID_JSON"


class InvalidPayloadError(ToxiserveError):
    status, error_code = 400, "INVALID_PAYLOAD"


class EmptyBatchError(ToxiserveError):
    status, error_code = 400, "EMPTY_BATCH"


class UnauthorizedError(ToxiserveError):
    status, error_code = 401, "UNAUTHORIZED"


class NotFoundError(ToxiserveError):
    status, error_code = 404, "NOT_FOUND"


class MethodNotAllowedError(ToxiserveError):
    status, error_code = 405, "METHOD_NOT_ALLOWED"


class IdempotencyConflictError(ToxiserveError):
    status, error_code = 409, "IDEMPOTENCY_CONFLICT"


class PayloadTooLargeError(ToxiserveError):
    status, error_code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaTypeError(ToxiserveError):
    status, error_code = 415, "UNSUPPORTED_MEDIA_TYPE"


class RateLimitedError(ToxiserveError):
    status, error_code = 429, "RATE_LIMITED"


class NotReadyError(ToxiserveError):
    status, error_code = 503, "NOT_READY"


class InferenceFailedError(ToxiserveError):
    status, error_code = 503, "INFERENCE_FAILED"


class OverloadedError(ToxiserveError):
    status, error_code = 503, "OVERLOADED"


class DeadlineExceededError(ToxiserveError):
    status, error_code = 503, "DEADLINE_EXCEEDED"


class ClientClosedError(ToxiserveError):
    """Nobody reads this answer: it names, in logs and metrics, work stopped because its client left."""

    status, error_code = 499, "CLIENT_CLOSED_REQUEST"


# Answered by the gunicorn worker itself, before the app (service/http/wsgi_server.py): same JSON body.
class MalformedRequestError(ToxiserveError):
    status, error_code = 400, "MALFORMED_REQUEST"


class RequestTimeoutError(ToxiserveError):
    status, error_code = 408, "REQUEST_TIMEOUT"


class UriTooLongError(ToxiserveError):
    status, error_code = 414, "URI_TOO_LONG"


class ExpectationFailedError(ToxiserveError):
    status, error_code = 417, "EXPECTATION_FAILED"


class HeadersTooLargeError(ToxiserveError):
    status, error_code = 431, "HEADERS_TOO_LARGE"


class TransferCodingError(ToxiserveError):
    status, error_code = 501, "NOT_IMPLEMENTED"


class ForbiddenError(ToxiserveError):
    status, error_code = 403, "FORBIDDEN"


class InternalError(ToxiserveError):
    status, error_code = 500, "INTERNAL_ERROR"


# werkzeug's own exceptions, by status, become ours so their bodies follow the contract.
_HTTP_EQUIVALENTS: dict[int, type[ToxiserveError]] = {
    400: InvalidJsonError,
    401: UnauthorizedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    429: RateLimitedError,
    503: NotReadyError,
}

# /v9/predict: a client asking for a model version this service does not serve, not a typo'd path.
_VERSIONED_PATH = re.compile(r"/(v\d+)/(?:predict|batch_predict)")

_PUBLIC_MESSAGES = {
    NotFoundError: "no such endpoint",
    MethodNotAllowedError: "method not allowed for this endpoint",
    PayloadTooLargeError: "request body is larger than the configured limit",
    InvalidJsonError: "request body is not valid JSON",
}


def error_body(error: ToxiserveError, request_id: str | None) -> dict:
    """The one error body of every HTTP answer."""
    body = {"error_code": error.error_code, "message": error.message, "request_id": request_id}
    if error.details is not None:
        body["details"] = error.details
    return body


def invalid_payload(error: ValidationError) -> InvalidPayloadError:
    """A marshmallow refusal as the contract's INVALID_PAYLOAD, naming the fields to check."""
    fields = sorted(error.messages) if isinstance(error.messages, dict) else []
    if fields == ["_schema"]:  # marshmallow's name for "the body itself": not a JSON object
        message = "request body must be a JSON object"
    else:
        message = "invalid request body" + (f": check {', '.join(fields)}" if fields else "")
    return InvalidPayloadError(message, details=error.messages)


def error_response(error: ToxiserveError, headers: dict | None = None):
    body = error_body(error, current_request_id())
    call = current_call()
    if call is not None:
        call.error_code = error.error_code  # for the request log line
    response = jsonify(body)
    response.status_code = error.status
    response.headers.update(headers or {})
    response.headers.update(getattr(error, "headers", None) or {})
    return response


def from_http_exception(exc: HTTPException) -> ToxiserveError:
    cls = _HTTP_EQUIVALENTS.get(exc.code or 500)
    if cls is None:
        cls = InternalError if (exc.code or 500) >= 500 else InvalidPayloadError
    error = cls(_PUBLIC_MESSAGES.get(cls, exc.description or cls.error_code.lower()))
    error.status = exc.code or error.status
    return error


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ToxiserveError)
    def handle_ours(error: ToxiserveError):
        return error_response(error)

    @app.errorhandler(ValidationError)
    def handle_validation(error: ValidationError):
        return error_response(invalid_payload(error))

    @app.errorhandler(HTTPException)
    def handle_http(exc: HTTPException):
        unknown_version = _VERSIONED_PATH.fullmatch(request.path) if exc.code == 404 else None
        if unknown_version:
            return error_response(
                NotFoundError(f"no model version {unknown_version.group(1)!r}: /v1 and /v2 are the versioned endpoints")
            )
        headers = {}
        if getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(from_http_exception(exc), headers)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        # Log the type and traceback for operators; the client gets no internals.
        log.exception("unhandled error: %s", type(exc).__name__)
        return error_response(InternalError("internal error"))
