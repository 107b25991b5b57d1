"""Structured JSON logs on stdout: one line per request, the request id on every line, never text or keys."""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson
from flask import g, request
from pythonjsonlogger.orjson import OrjsonFormatter

from service.call import Call
from service.observability import metrics, tracing
from service.request_context import current_request_id

request_log = logging.getLogger("toxiserve.request")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        if tracing.enabled():  # only then: the log format stays as it was without tracing
            record.__dict__.update(tracing.log_ids())
        return True


class JsonLineFormatter(OrjsonFormatter):
    """python-json-logger's formatter on orjson (a request's line was the costliest step of a request
    after the model: bench.request_breakdown), with the timestamp, which has no sub-second part,
    formatted once per second instead of once per line."""

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime(self.datefmt, self.converter(second)))
        return cached[1]


def json_formatter() -> JsonLineFormatter:
    return JsonLineFormatter(
        "{asctime}{levelname}{name}{process}{message}{request_id}",
        style="{",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "process": "pid"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def gather_only_what_lines_show() -> None:
    """The logging HOWTO's optimisations: no line shows the caller's file and line (a stack walk per
    record), the thread or the process name, so records do not gather them. The pid stays."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def app_handler() -> logging.Handler:
    """The root logger's handler: JSON lines on stdout with the request (and trace) ids. gunicorn's
    logconfig_dict builds it too, so that the logging setup gunicorn re-applies on SIGHUP keeps it."""
    handler = logging.StreamHandler(sys.stdout)
    handler._toxiserve = True
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str = "INFO") -> None:
    """Idempotent: create_app may run more than once per process (tests), and under gunicorn the
    handler is already there (logconfig_dict)."""
    gather_only_what_lines_show()
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(handler, "_toxiserve", False) for handler in root.handlers):
        root.addHandler(app_handler())


def log_request(response):
    """after_request: `record_request` for the request in Flask's context."""
    current = request._get_current_object()  # one context lookup
    route = current.url_rule.rule if current.url_rule else "unmatched"  # bounded label values
    record_request(g.call, route, current.method, response.status_code)
    return response


def record_request(call: Call, route: str, method: str, status: int) -> None:
    """The one line per HTTP request (the Call's facts), and its HTTP metrics."""
    elapsed = time.perf_counter() - call.started
    metrics.child(metrics.HTTP_REQUESTS, route, method, str(status)).inc()
    metrics.child(metrics.HTTP_DURATION, route, method).observe(elapsed)
    fields = {"route": route, "method": method, "status": status, "latency_ms": round(elapsed * 1000, 3)}
    if call.arm is not None:
        metrics.child(metrics.ROUTED_REQUESTS, call.arm, str(status)).inc()
        metrics.child(metrics.ROUTED_DURATION, call.arm).observe(elapsed)
    fields.update(call.log_fields())  # the request id too: spares the filter its context lookup
    if not write_request_line(fields):
        request_log.info("request", extra=fields)


def write_request_line(fields: dict) -> bool:
    """The request line straight to the app's handler, when that is the only place it would go: the
    line logging would write, at about a tenth of its cost (LogRecord, filter and formatter were a
    seventh of a scoring request: bench.request_breakdown). Flushed per line, under the handler's
    lock, as StreamHandler.emit does. False (nothing written) whenever anything else could see the
    record (another handler, a filter, a level, tracing ids): then logging writes it."""
    handler = _only_handler()
    if handler is None:
        return False
    line = {"ts": handler.formatter.stamp(time.time()), "level": "INFO", "logger": request_log.name}
    request_id = fields["request_id"] if "request_id" in fields else current_request_id()
    line.update(pid=os.getpid(), message="request", request_id=request_id)
    line.update(fields)
    try:
        text = orjson.dumps(line).decode() + handler.terminator
    except TypeError:
        return False  # a value orjson cannot write: the formatter's fallbacks can
    try:
        with handler.lock:
            handler.stream.write(text)
            handler.flush()
    except Exception:  # stdout closed, a full disk: logging reports it (handleError), the request goes on
        return False
    return True


def _only_handler() -> logging.StreamHandler | None:
    """The app's handler, if it is the one handler an INFO line of `request_log` would reach and it
    would write the line unchanged; else None."""
    if not request_log.isEnabledFor(logging.INFO) or request_log.filters or tracing.enabled():
        return None
    found: list[logging.Handler] = []
    logger: logging.Logger | None = request_log
    while logger is not None:  # as Logger.callHandlers walks them
        found += logger.handlers
        if not logger.propagate:
            break
        logger = logger.parent
    if len(found) != 1:
        return None
    handler = found[0]
    if (
        not getattr(handler, "_toxiserve", False)
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonLineFormatter
        or [type(each) for each in handler.filters] != [RequestIdFilter]
    ):
        return None
    return handler
