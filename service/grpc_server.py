"""gRPC transport: `python -m service.grpc_server` (Procfile `grpc:`). Thin, like the Flask views.

Validation of values, scoring, canary routing, rate limits and idempotency are the HTTP service's
own objects (`ServiceState`), so both transports answer the same request the same way.

Status codes: INVALID_ARGUMENT (400/422 errors), UNAUTHENTICATED (401), NOT_FOUND (unknown
version), ALREADY_EXISTS (idempotency conflict: the request id already exists with another
payload), RESOURCE_EXHAUSTED (rate limit), UNAVAILABLE (not ready, overloaded, draining, store
down when failing closed), INTERNAL (a bug). Trailing metadata carries "error-code" and "request-id".
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared_features.errors import ToxiserveError, UnprocessableError

from . import build_service, load_config
from .deadline import Deadline
from .errors import InternalError, NotReadyError, OverloadedError
from .grpc_gen import toxicity_pb2, toxicity_pb2_grpc
from .readiness import READY
from .request_context import REQUEST_ID_RULE, is_valid_request_id
from .state import ServiceState

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


class Toxicity(toxicity_pb2_grpc.ToxicityServicer):
    def __init__(self, service: ServiceState) -> None:
        self.service = service

    def Predict(self, request, context):  # noqa: N802 - gRPC method names
        def handle(key_id: str, request_id: str, client_id: bool) -> toxicity_pb2.PredictResponse:
            inference = self.service.inference
            version = self._version(request.version, request_id)

            def compute() -> dict:
                prediction = inference.predict(request.text, version, self._deadline(context))
                return {
                    "label": prediction.label,
                    "score": prediction.score,
                    "model_version": prediction.model_version,
                    "request_id": request_id,
                }

            body = self._once(
                key_id,
                request_id,
                client_id,
                f"grpc:Predict:{request.version or 'router'}",
                {"text": request.text},
                compute,
                context,
            )
            return toxicity_pb2.PredictResponse(**body)

        return self._call("Predict", request, context, handle)

    def BatchPredict(self, request, context):  # noqa: N802
        def handle(key_id: str, request_id: str, client_id: bool) -> toxicity_pb2.BatchPredictResponse:
            version = self._version(request.version, request_id)
            texts = list(request.texts)

            def compute() -> dict:
                predictions = self.service.inference.predict_batch(texts, version, self._deadline(context))
                return {
                    "results": [p.as_result() for p in predictions],
                    "model_version": version,
                    "request_id": request_id,
                }

            body = self._once(
                key_id,
                request_id,
                client_id,
                f"grpc:BatchPredict:{request.version or 'router'}",
                {"texts": texts},
                compute,
                context,
            )
            return toxicity_pb2.BatchPredictResponse(
                results=[toxicity_pb2.Result(**r) for r in body["results"]],
                model_version=body["model_version"],
                request_id=body["request_id"],
            )

        return self._call("BatchPredict", request, context, handle)

    # --- shared by both RPCs: the same guards, in the same order, as the HTTP service ---

    def _deadline(self, context) -> Deadline:
        return Deadline(self.service.settings.request_deadline, lambda: not context.is_active())

    def _version(self, requested: str, request_id: str) -> str:
        if requested in ("", "router"):
            return self.service.route(request_id)[0]
        self.service.inference.model(requested)  # NOT_FOUND for an unknown version
        return requested

    def _once(self, key_id, request_id, client_id, operation, payload, compute, context) -> dict:
        if not client_id:  # an id we generated can never repeat: nothing to deduplicate
            return compute()
        body, replayed = self.service.idempotency.run_once(key_id, request_id, operation, payload, compute)
        if replayed:
            context.set_trailing_metadata((("idempotent-replayed", "true"), ("request-id", request_id)))
        return body

    def _call(self, method: str, request, context, handle):
        started = time.perf_counter()
        request_id = request.request_id or uuid.uuid4().hex
        service, key_id, code = self.service, None, grpc.StatusCode.OK
        entered = service.in_flight.try_enter()
        try:
            if not entered:
                raise OverloadedError("too many requests in flight; retry shortly")
            if request.request_id and not is_valid_request_id(request.request_id):
                raise UnprocessableError(f"request_id must be {REQUEST_ID_RULE}")
            metadata = dict(context.invocation_metadata())
            key_id = "anonymous" if service.auth_disabled else service.api_keys.authenticate(metadata.get("x-api-key"))
            service.rate_limiter.check(key_id, len(getattr(request, "texts", ())) or 1)
            if service.readiness.state != READY or service.inference is None:
                raise NotReadyError("models are still loading" if service.inference is None else "draining")
            return handle(key_id, request_id, bool(request.request_id))
        except ToxiserveError as error:
            code = _STATUS_BY_HTTP.get(error.status, grpc.StatusCode.INTERNAL)
            self._abort(context, code, error, request_id)
        except Exception:
            log.exception("unhandled error in %s", method, extra={"request_id": request_id})
            code = grpc.StatusCode.INTERNAL
            self._abort(context, code, InternalError("internal error"), request_id)
        finally:
            if entered:
                service.in_flight.leave()
            log.info(
                "rpc",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "code": code.name,
                    "key_id": key_id,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )

    @staticmethod
    def _abort(context, code, error: ToxiserveError, request_id: str):
        trailing = [("error-code", error.error_code), ("request-id", request_id)]
        for name, value in (getattr(error, "headers", None) or {}).items():
            trailing.append((name.lower(), str(value)))
        context.set_trailing_metadata(tuple(trailing))
        context.abort(code, error.message)


def build_server(service: ServiceState, port: int, host: str = "0.0.0.0", threads: int = 8):
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    toxicity_pb2_grpc.add_ToxicityServicer_to_server(Toxicity(service), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, health_servicer, bound


def set_health(health_servicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, status)


def serve() -> int:
    config = load_config()
    service = build_service(config)
    port = int(os.environ.get("TOXISERVE_GRPC_PORT", "50051"))
    host = os.environ.get("TOXISERVE_BIND_HOST", "0.0.0.0")
    threads = int(os.environ.get("TOXISERVE_GRPC_THREADS", "8"))
    grace = float(os.environ.get("TOXISERVE_GRACEFUL_TIMEOUT", "20"))
    server, health_servicer, bound = build_server(service, port, host, threads)
    set_health(health_servicer, False)  # up, but not serving until the models are warm
    server.start()
    log.info("gRPC listening", extra={"port": bound, "threads": threads})
    service.load_models()
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
    log.info("gRPC stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(serve())
