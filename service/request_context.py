"""Request ids, kept apart as the field's conventions keep them (IETF httpapi idempotency-key draft):

- `X-Request-ID` correlates: echoed as it came and logged, never deduplicated, so a gateway that
  reuses one across different texts gets each answered;
- the body's `request_id` (toxiserve's JSON routes; it wins when both are sent) or the
  `Idempotency-Key` header deduplicates: a retry with it is answered from the first answer, and the
  same key with another payload is 409;
- the request id an answer carries is the body's `request_id`, else the Idempotency-Key, else the
  X-Request-ID, else generated. The OIP `id` is only echoed: it is the request id, never a key.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar, Token

from flask import g, has_request_context, request

from service.call import Call
from shared_features.errors import UnprocessableError

REQUEST_ID_HEADER = "X-Request-ID"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# Printable, log-safe, bounded: ids end up in logs, headers and store keys. Checked with fullmatch:
# `re.match` with `$` also accepts a final "\n", which then broke the answer's header (a 500).
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
REQUEST_ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ : -"
# The same rule as a JSON Schema (ECMA-262) pattern, where `$` is the end of the string.
REQUEST_ID_SCHEMA_PATTERN = f"^{REQUEST_ID_PATTERN.pattern}$"


def is_valid_request_id(value: str) -> bool:
    return isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value) is not None


# The Call of the request this thread serves outside Flask's context (the scoring routes' fast lane,
# service/http/hot_routes.py), so log lines and errors find its id there too.
_bound_call: ContextVar[Call | None] = ContextVar("toxiserve_call", default=None)


def new_request_id() -> str:
    """32 hex digits, as uuid4().hex has them, at a tenth of its cost (no UUID object, no system
    call): an id only correlates, it guards nothing. Each worker's generator is reseeded at fork."""
    return f"{random.getrandbits(128):032x}"


def new_call(correlation: str | None, idempotency_key: str | None) -> Call:
    """The request's Call from its X-Request-ID and Idempotency-Key header values, with a usable id
    before the body is parsed, so early errors carry one. Malformed headers are remembered and
    refused once the route adopts its ids (`adopt_ids`)."""
    malformed = []
    if correlation is not None and not is_valid_request_id(correlation):
        malformed.append(REQUEST_ID_HEADER)
        correlation = None
    if idempotency_key is not None and not is_valid_request_id(idempotency_key):
        malformed.append(IDEMPOTENCY_KEY_HEADER)
        idempotency_key = None
    return Call(
        "http",
        idempotency_key or correlation or new_request_id(),
        idempotency_key=idempotency_key,
        correlation_id=correlation,
        malformed_id_headers=tuple(malformed),
    )


def begin_call() -> None:
    """before_request: the request's Call."""
    g.call = new_call(request.headers.get(REQUEST_ID_HEADER), request.headers.get(IDEMPOTENCY_KEY_HEADER))


def bind_call(call: Call) -> Token:
    return _bound_call.set(call)


def unbind_call(token: Token) -> None:
    _bound_call.reset(token)


def adopt_request_id(body_value: str | None, deduplicates: bool = True) -> str:
    """`adopt_ids` for the request in Flask's context."""
    return adopt_ids(g.call, body_value, deduplicates)


def adopt_ids(call: Call, body_value: str | None, deduplicates: bool = True) -> str:
    """The id an API call answers to: the body's wins over the headers; a malformed one is a 422.

    With `deduplicates` (toxiserve's `request_id`), the body's id is also the idempotency key, over
    an Idempotency-Key header; the OIP `id` is not. Silently replacing a malformed id would break
    the client's retries.
    """
    malformed = call.malformed_id_headers
    if malformed:
        raise UnprocessableError(f"{malformed[0]} must be {REQUEST_ID_RULE}", details={"request_id": ["malformed"]})
    if body_value is not None:
        if not is_valid_request_id(body_value):
            raise UnprocessableError(f"request_id must be {REQUEST_ID_RULE}", details={"request_id": ["malformed"]})
        call.request_id = body_value
        if deduplicates:
            call.idempotency_key = body_value
    return call.request_id


def current_call() -> Call | None:
    bound = _bound_call.get()
    if bound is not None:
        return bound
    return g.get("call") if has_request_context() else None


def current_request_id() -> str | None:
    call = current_call()
    return call.request_id if call is not None else None


def echo_request_id(response):
    """X-Request-ID on every answer: the client's own correlation id as it came, else the request id."""
    call = current_call()
    if call is not None:
        response.headers[REQUEST_ID_HEADER] = echoed_id(call)
    return response


def echoed_id(call: Call) -> str:
    return call.correlation_id or call.request_id
