"""The request id: from the body, else the X-Request-ID header, else generated; echoed everywhere."""

from __future__ import annotations

import re
import uuid

from flask import g, has_request_context, request

from service.call import Call
from shared_features.errors import UnprocessableError

REQUEST_ID_HEADER = "X-Request-ID"
# Printable, log-safe, bounded: ids end up in logs, headers and store keys. Checked with fullmatch:
# `re.match` with `$` also accepts a final "\n", which then broke the answer's header (a 500).
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
REQUEST_ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ : -"
# The same rule as a JSON Schema (ECMA-262) pattern, where `$` is the end of the string.
REQUEST_ID_SCHEMA_PATTERN = f"^{REQUEST_ID_PATTERN.pattern}$"


def is_valid_request_id(value: str) -> bool:
    return isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value) is not None


def begin_call() -> None:
    """before_request: the request's Call, with a usable id before the body is parsed, so early
    errors carry one."""
    header = request.headers.get(REQUEST_ID_HEADER)
    valid = header is not None and is_valid_request_id(header)
    g.call = Call("http", header if valid else uuid.uuid4().hex, client_request_id=valid)
    g.malformed_request_id_header = header is not None and not valid


def adopt_request_id(body_value: str | None) -> str:
    """The id an API call answers to: the body's wins over the header; a malformed one is a 422.

    Silently replacing a malformed id would break the client's retries (idempotency keys on it).
    """
    call = g.call
    if body_value is not None:
        if not is_valid_request_id(body_value):
            raise UnprocessableError(f"request_id must be {REQUEST_ID_RULE}", details={"request_id": ["malformed"]})
        call.request_id, call.client_request_id = body_value, True
    elif g.get("malformed_request_id_header"):
        raise UnprocessableError(
            f"{REQUEST_ID_HEADER} must be {REQUEST_ID_RULE}", details={"request_id": ["malformed"]}
        )
    return call.request_id


def current_call() -> Call | None:
    return g.get("call") if has_request_context() else None


def current_request_id() -> str | None:
    call = current_call()
    return call.request_id if call is not None else None


def echo_request_id(response):
    request_id = current_request_id()
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response
