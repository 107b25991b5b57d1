"""The JSON error contract as raw HTTP bytes, for answers the gunicorn worker writes before the app."""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus


def raw_error_response(status: int, error_code: str, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete `Connection: close` response with the body `{"error_code", "message", "request_id"}`.

    The request was never parsed (or not completely), so its own id is unknown: a fresh one is
    generated, as the app does for a request without one, and echoed in `X-Request-ID`.
    """
    request_id = uuid.uuid4().hex
    body = json.dumps({"error_code": error_code, "message": message, "request_id": request_id}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        + "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
