"""OpenTelemetry traces, off by default (TOXISERVE_TRACING=true; the `tracing` extra).

A span per request on every transport: W3C `traceparent`/`tracestate` from the HTTP headers or the
gRPC metadata are its parent (the propagators of OTEL_PROPAGATORS), and it carries the route or
method, the status, the model version, the arm, the rollout revision and the refusal
(`toxiserve.error_code`); never text, never a key. While it is open every log line carries its
`trace_id` and `span_id`.

Everything else is the SDK's standard configuration: OTEL_TRACES_EXPORTER (otlp by default; console,
none, or any installed exporter's entry point), OTEL_EXPORTER_OTLP_* for where OTLP goes (protocol
http/protobuf unless OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL says grpc), OTEL_SERVICE_NAME
(default toxiserve), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*.

The SDK starts in each process at its first span, so after gunicorn forks: a batch processor's
export thread started in the master would not survive the fork.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

from service.settings import ConfigError

_enabled = False
_started: dict = {}  # pid -> (tracer, provider): one SDK per process, made after any fork
_exporter_override = None  # tests: an exporter instance instead of OTEL_TRACES_EXPORTER's


def configure(enabled: bool, exporter=None) -> None:
    """Turn tracing on or off for this process (create_app and the gRPC process call it). A
    configuration that cannot trace stops the start, never the first request of each worker."""
    global _enabled, _exporter_override
    if enabled and exporter is None:
        _exporter_points()  # raises ConfigError: no SDK, or an exporter no installed package provides
    _enabled, _exporter_override = enabled, exporter
    if not enabled:
        _started.clear()


def enabled() -> bool:
    return _enabled


def tracer():
    """This process's tracer, started on first use; None while tracing is off."""
    if not _enabled:
        return None
    started = _started.get(os.getpid())
    if started is None:
        started = _started[os.getpid()] = _start()
    return started[0]


def _start():
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "toxiserve")})
    provider = TracerProvider(resource=resource.merge(OTELResourceDetector().detect()))
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider.get_tracer("toxiserve"), provider


def _exporters() -> list:
    if _exporter_override is not None:
        return [_exporter_override]
    return [point.load()() for point in _exporter_points()]


def _exporter_points() -> list:
    """The entry points of OTEL_TRACES_EXPORTER's exporters (the SDK's own names and mapping)."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401 - only whether it is installed
    except ImportError:
        raise ConfigError(
            "TOXISERVE_TRACING=true needs the OpenTelemetry SDK: pip install 'toxiserve[tracing]'"
        ) from None
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    points = []
    for name in names:
        if name == "none":
            continue
        if name == "otlp":  # the SDK's own mapping: OTLP over HTTP unless the protocol says grpc
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            )
            name = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            raise ConfigError(f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides")
        points.append(found[0])
    return points


def flush() -> None:
    """Export every finished span now (tests; a draining process)."""
    for _, provider in _started.values():
        provider.force_flush()


def start_span(name: str, carrier: dict, kind: str):
    """A server span for one request, its parent read from `carrier` (headers or metadata), and the
    context token that makes it current; (None, None) while tracing is off."""
    chosen = tracer()
    if chosen is None:
        return None, None
    from opentelemetry import context, propagate, trace

    parent = propagate.extract(carrier)
    span = chosen.start_span(name, context=parent, kind=getattr(trace.SpanKind, kind))
    return span, context.attach(trace.set_span_in_context(span, parent))


def end_span(span, token, status: int, facts: dict) -> None:
    """Close a request's span with what the request learned (the Call's facts) and its status."""
    if span is None:
        return
    from opentelemetry import context
    from opentelemetry.trace import Status, StatusCode

    for name, value in facts.items():
        if value is not None:
            span.set_attribute(name, value)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
    context.detach(token)


def log_ids() -> dict[str, str]:
    """`trace_id` and `span_id` of the current span, for a log line; {} when there is none."""
    if not _enabled:
        return {}
    from opentelemetry import trace

    current = trace.get_current_span().get_span_context()
    if not current.is_valid:
        return {}
    return {"trace_id": f"{current.trace_id:032x}", "span_id": f"{current.span_id:016x}"}
