"""gRPC transport: `python -m service.grpc` (Procfile `grpc:`). Thin, like the Flask views.

Admission, idempotency, routing and scoring are the data plane's (`service.core.dataplane`), the same
object the HTTP views call, so every transport answers the same request the same way.

Status codes: INVALID_ARGUMENT (400/422 errors), UNAUTHENTICATED (401), NOT_FOUND (unknown
version), ALREADY_EXISTS (idempotency conflict: the request id already exists with another
payload), RESOURCE_EXHAUSTED (rate limit), UNAVAILABLE (not ready, overloaded, deadline passed,
store down when failing closed), CANCELLED (the client left), INTERNAL (a bug). Trailing
metadata carries "error-code" and "request-id", and "retry-after" where there is one.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import uuid
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service.call import Call
from service.core.bootstrap import build_service, load_config
from service.core.dataplane import batch_answer, one_answer
from service.core.inference import Detail
from service.core.schemas import MAX_EXPLAIN
from service.core.state import ServiceState
from service.errors import InternalError
from service.grpc import oip
from service.grpc.gen import toxicity_pb2, toxicity_pb2_grpc
from service.observability import metrics, tracing
from service.observability.metrics_port import serve_metrics
from service.request_context import REQUEST_ID_RULE, is_valid_request_id
from shared_features.errors import ToxiserveError, UnprocessableError

log = logging.getLogger("toxiserve.grpc")
SERVICE_NAME = toxicity_pb2.DESCRIPTOR.services_by_name["Toxicity"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # as the HTTP body cap: 1000 texts x 2000 chars fit

_STATUS_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}


class GrpcTransport:
    """What every servicer shares: the Call, the key from metadata, errors as status codes, the log line.

    The data plane does the rest, in the same order as for HTTP: a servicer method only converts
    its message to texts and the answer back.
    """

    def __init__(self, service: ServiceState) -> None:
        self.service = service
        self.dataplane = service.dataplane

    def run(self, method: str, request_id: str, context, handle, authenticate: bool = True, deduplicates: bool = True):
        """`request_id`: the message's id; with `deduplicates` (toxiserve's request_id) also its
        idempotency key. The OIP `id` is only echoed; `idempotency-key` metadata deduplicates any call."""
        metadata = dict(context.invocation_metadata())
        header_key = metadata.get("idempotency-key")
        # toxiserve's request_id wins over the metadata, as the body's does over the HTTP header
        idempotency_key = request_id if deduplicates and request_id else header_key
        call = Call("grpc", request_id or header_key or uuid.uuid4().hex, idempotency_key=idempotency_key)
        code, status = grpc.StatusCode.OK, 200
        span, token = tracing.start_span(method, metadata, "SERVER") if tracing.enabled() else (None, None)
        try:
            if authenticate:
                self.dataplane.authenticate(call, metadata.get("x-api-key"), peer_address(context.peer()))
            for value in (request_id, header_key):
                if value and not is_valid_request_id(value):
                    raise UnprocessableError(f"request_id and idempotency-key must be {REQUEST_ID_RULE}")
            return handle(call)
        except ToxiserveError as error:
            call.error_code, status = error.error_code, error.status
            code = _STATUS_BY_HTTP.get(error.status, grpc.StatusCode.INTERNAL)
            self.abort(context, code, error, call)
        except Exception:
            log.exception("unhandled error in %s", method, extra={"request_id": call.request_id})
            code, status = grpc.StatusCode.INTERNAL, 500
            call.error_code = "INTERNAL_ERROR"
            self.abort(context, code, InternalError("internal error"), call)
        finally:
            elapsed = time.perf_counter() - call.started
            metrics.child(metrics.GRPC_REQUESTS, method, code.name).inc()
            metrics.child(metrics.GRPC_DURATION, method).observe(elapsed)
            if call.arm is not None:  # the canary's evidence counts every transport
                metrics.child(metrics.ROUTED_REQUESTS, call.arm, str(status)).inc()
                metrics.child(metrics.ROUTED_DURATION, call.arm).observe(elapsed)
            elapsed_ms = round(elapsed * 1000, 3)
            log.info("rpc", extra={"method": method, "code": code.name, "latency_ms": elapsed_ms, **call.log_fields()})
            rpc = {"rpc.system": "grpc", "rpc.method": method, "rpc.grpc.status_code": code.value[0]}
            tracing.end_span(span, token, status, rpc | call.span_attributes())

    def replayed_marker(self, context, call: Call) -> None:
        """Trailing metadata of a successful call: the replay marker, and the revision it was routed under."""
        trailing = []
        if call.replayed:
            trailing += [("idempotent-replayed", "true"), ("request-id", call.request_id)]
        if call.rollout_revision is not None:
            trailing.append(("x-rollout-revision", str(call.rollout_revision)))
        if trailing:
            context.set_trailing_metadata(tuple(trailing))

    @staticmethod
    def abort(context, code, error: ToxiserveError, call: Call):
        trailing = [("error-code", error.error_code), ("request-id", call.request_id)]
        for name, value in (getattr(error, "headers", None) or {}).items():
            trailing.append((name.lower(), str(value)))  # the retry hint: retry-after
        context.set_trailing_metadata(tuple(trailing))
        context.abort(code, error.message)


def peer_address(peer: str) -> str:
    """The address in a gRPC peer string: "ipv4:127.0.0.1:5123" -> "127.0.0.1", "ipv6:[::1]:5123" -> "::1"."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer or "unknown"


def client_gone(context):
    return lambda: not context.is_active()


def selected_version(requested: str) -> str | None:
    """gRPC's version selector: empty or "router" is the canary router."""
    return None if requested in ("", "router") else requested


def requested_detail(request) -> Detail:
    """The request's `categories` and `explain` (as the JSON routes read them; at most MAX_EXPLAIN)."""
    if request.explain > MAX_EXPLAIN:
        raise UnprocessableError(f"explain must be at most {MAX_EXPLAIN}", details={"explain": ["too large"]})
    return Detail(request.categories, request.explain)


class Toxicity(toxicity_pb2_grpc.ToxicityServicer):
    def __init__(self, transport: GrpcTransport) -> None:
        self.transport = transport

    def Predict(self, request, context):  # noqa: N802 - gRPC method names
        def handle(call: Call) -> toxicity_pb2.PredictResponse:
            operation = f"grpc:Predict:{request.version or 'router'}"
            body = self.transport.dataplane.score(
                call,
                [request.text],
                selected_version(request.version),
                operation,
                one_answer,
                True,
                client_gone(context),
                detail=requested_detail(request),
            )
            self.transport.replayed_marker(context, call)
            return toxicity_pb2.PredictResponse(**body)

        return self.transport.run("Predict", request.request_id, context, handle)

    def BatchPredict(self, request, context):  # noqa: N802
        def handle(call: Call) -> toxicity_pb2.BatchPredictResponse:
            operation = f"grpc:BatchPredict:{request.version or 'router'}"
            body = self.transport.dataplane.score(
                call,
                list(request.texts),
                selected_version(request.version),
                operation,
                batch_answer,
                client_gone=client_gone(context),
                detail=requested_detail(request),
            )
            self.transport.replayed_marker(context, call)
            return toxicity_pb2.BatchPredictResponse(
                results=[toxicity_pb2.Result(**r) for r in body["results"]],
                model_version=body["model_version"],
                request_id=body["request_id"],
            )

        return self.transport.run("BatchPredict", request.request_id, context, handle)


def build_server(service: ServiceState, port: int, host: str = "0.0.0.0", threads: int = 8):
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    transport = GrpcTransport(service)
    toxicity_pb2_grpc.add_ToxicityServicer_to_server(Toxicity(transport), server)
    oip_service = oip.add_to_server(transport, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    names = (SERVICE_NAME, oip_service, health_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=reflection_pool())
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, health_servicer, bound


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """Every service this process offers, for reflection: the OIP stubs live in a pool of their own
    (see service/grpc/gen/__main__.py), so the default pool does not know them."""
    pool = descriptor_pool.DescriptorPool()
    for module in (toxicity_pb2, oip.pb, health_pb2, reflection_pb2):
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
    return pool


def set_health(health_servicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", SERVICE_NAME, oip.SERVICE_NAME):
        health_servicer.set(name, status)


def serve() -> int:
    config = load_config()
    service = build_service(config)
    settings = service.settings
    port, host, threads, grace = (
        settings.grpc_port,
        settings.bind_host,
        settings.grpc_threads,
        settings.graceful_timeout,
    )
    exporter, metrics_port = None, settings.grpc_metrics_port
    if metrics_port:  # this process has no HTTP server: /metrics gets a port of its own
        # Bound first, so a taken port is one line at once, not a traceback after the models load.
        try:
            exporter = serve_metrics(host, metrics_port, service.metric_collectors, settings.metrics_token)
        except OSError as exc:
            sys.exit(f"Error: cannot serve metrics on {host}:{metrics_port}: {exc.strerror}")
        log.info("metrics listening", extra={"port": metrics_port})
    server, health_servicer, bound = build_server(service, port, host, threads)
    set_health(health_servicer, False)  # up, but not serving until the models are warm
    server.start()
    log.info("gRPC listening", extra={"port": bound, "threads": threads})
    service.load_models()
    service.start_background()
    set_health(health_servicer, True)

    stopped = threading.Event()

    def on_term(signum, frame):
        # Stop accepting, tell health checkers, let in-flight RPCs finish within the grace period.
        log.info("draining: no new RPCs; finishing in-flight ones", extra={"grace_seconds": grace})
        service.readiness.begin_draining()
        set_health(health_servicer, False)
        server.stop(grace).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stopped.wait(0.5):
        pass
    service.stop_background()
    if exporter is not None:
        exporter.shutdown()
    log.info("gRPC stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(serve())
