"""Structured JSON logs on stdout: one line per request, the request id on every line, never text or keys."""

from __future__ import annotations

import logging
import sys
import time

from flask import g, request
from pythonjsonlogger.json import JsonFormatter

from . import metrics
from .request_context import current_request_id

request_log = logging.getLogger("toxiserve.request")

# Only these per-request facts are logged; the request body never is.
REQUEST_FIELDS = ("model_version", "arm", "key_id", "text_length", "text_count", "error_code", "replayed")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


def json_formatter() -> JsonFormatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{process}{message}{request_id}",
        style="{",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "process": "pid"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def configure_logging(level: str = "INFO") -> None:
    """Idempotent: create_app may run more than once per process (tests)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, "_toxiserve", False):
            return
    handler = logging.StreamHandler(sys.stdout)
    handler._toxiserve = True
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)


def start_timer() -> None:
    g.started = time.perf_counter()


def log_request(response):
    """after_request: the one line per request, and its HTTP metrics."""
    request_globals, current = g._get_current_object(), request._get_current_object()  # one lookup each
    started = request_globals.get("started")
    elapsed = time.perf_counter() - started if started else 0.0
    route = current.url_rule.rule if current.url_rule else "unmatched"  # bounded label values
    status = response.status_code
    metrics.child(metrics.HTTP_REQUESTS, route, current.method, str(status)).inc()
    metrics.child(metrics.HTTP_DURATION, route, current.method).observe(elapsed)
    fields = {"route": route, "method": current.method, "status": status, "latency_ms": round(elapsed * 1000, 3)}
    for name in REQUEST_FIELDS:
        value = request_globals.get(name)
        if value is not None:
            fields[name] = value
    fields["request_id"] = request_globals.get("request_id")  # spares the filter its context lookup
    request_log.info("request", extra=fields)
    return response
