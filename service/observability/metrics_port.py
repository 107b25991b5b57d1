"""`/metrics` on a port of its own, for a process with no HTTP server of its own (the gRPC one):
the same exposition, drift collectors and bearer token as the web process's `/metrics`."""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer

from service.observability.metrics import exposition, token_accepted

log = logging.getLogger(__name__)
IDLE_SECONDS = 10


class _QuietHandler(WSGIRequestHandler):
    # A connection that sends nothing for this long is closed: a slow or stalled client would
    # otherwise hold its thread for ever (wsgiref reads with no timeout).
    timeout = IDLE_SECONDS

    def log_message(self, *args) -> None:
        """A scrape every few seconds is not news; the process's own log stays JSON lines."""


class _MetricsServer(ThreadingWSGIServer):
    def handle_error(self, request, client_address) -> None:
        """One JSON log line, never socketserver's traceback on stderr; a scraper that stalled past
        the idle limit or went away is not an error of ours."""
        error = sys.exc_info()[1]
        if not isinstance(error, TimeoutError | ConnectionError):
            log.warning("metrics scrape failed: %s", type(error).__name__)


def _error(start_response, status: str, error_code: str, message: str) -> list[bytes]:
    body = json.dumps({"error_code": error_code, "message": message, "request_id": uuid.uuid4().hex}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def serve_metrics(host: str, port: int, collectors: Callable[[], Iterable], token: str | None) -> _MetricsServer:
    """Serve GET /metrics on host:port from a daemon thread; `.shutdown()` stops it."""

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            return _error(start_response, "404 Not Found", "NOT_FOUND", "only /metrics is served on this port")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _error(start_response, "405 Method Not Allowed", "METHOD_NOT_ALLOWED", "GET /metrics")
        if not token_accepted(token, environ.get("HTTP_AUTHORIZATION")):
            return _error(start_response, "401 Unauthorized", "UNAUTHORIZED", "metrics need the metrics bearer token")
        body = exposition(collectors())
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    server = make_server(host, port, app, _MetricsServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True).start()
    return server
