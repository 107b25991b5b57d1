"""One data plane for every transport: HTTP, the Open Inference Protocol (REST and gRPC) and gRPC.

MLServer's DataPlane is the model: "used by both the gRPC and REST servers". Transports parse a
request into texts, hand them here, and serialise what comes back; everything between happens in
one place, in one order, for all of them:

    key -> rate limit (one unit per text) -> readiness -> in-flight / queue wait -> idempotency
        -> routing -> scoring (with a deadline)

A request refused for the service's own state (models still loading, overloaded) gets its rate-limit
units back: a client told to retry does not pay for every try.

Every refusal is counted the same way (`requests_refused_total{error_code}`, beside the older
specific counters) and carries its retry hint in the error's headers, which each transport renders
in its own form (HTTP headers, gRPC trailing metadata). A call's facts (request id, key id, arm,
version, sizes, replayed, refusal) live in one `Call`, which the log line and the metrics read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.admission.auth import API_KEY_HEADER
from service.admission.backpressure import overloaded, queue_wait
from service.admission.deadline import Deadline
from service.call import Call
from service.core.inference import PLAIN, Detail, InferenceService, Prediction
from service.core.readiness import STARTING
from service.errors import NotReadyError, UnauthorizedError
from service.observability import metrics
from shared_features.errors import ToxiserveError

# Errors after routing that are the model's doing: it raised, or scoring ran past its deadline. Not
# the client's (4xx), nor the worker's load (a full micro-batch queue is 503 OVERLOADED on either arm).
ARM_FAULTS = ("INFERENCE_FAILED", "DEADLINE_EXCEEDED")


def arm_fault(exc: BaseException) -> bool:
    return not isinstance(exc, ToxiserveError) or exc.error_code in ARM_FAULTS


def answer_facts(call: Call, current_revision: int) -> dict:
    """Kept beside a stored answer (never replayed): the rollout revision it was answered under and
    whether the router chose its arm. A label counts as rollout evidence only for routed answers,
    at their revision: never at the revision current when the label arrives."""
    routed = call.arm is not None
    return {"_answered": {"revision": call.rollout_revision if routed else current_revision, "routed": routed}}


def one_answer(predictions: list[Prediction], model_version: str, request_id: str) -> dict:
    """The answer body of a single-text prediction: HTTP /predict, /vN/predict and gRPC Predict."""
    (prediction,) = predictions
    body = {
        "label": prediction.label,
        "score": prediction.score,
        "model_version": model_version,
        "request_id": request_id,
    }
    return prediction.add_details(body)


def batch_answer(predictions: list[Prediction], model_version: str, request_id: str) -> dict:
    """The answer body of a batch: HTTP /vN/batch_predict and gRPC BatchPredict."""
    return {"results": [p.as_result() for p in predictions], "model_version": model_version, "request_id": request_id}


class DataPlane:
    def __init__(self, service) -> None:
        self.service = service  # ServiceState: settings, keys, limiter, idempotency, models

    def authenticate(self, call: Call, presented_key: str | None, address: str) -> None:
        """The key first, before a transport parses anything a stranger sent. `address` is the
        client's, which failed checks are charged to (429 past TOXISERVE_AUTH_FAILURE_LIMIT)."""
        service = self.service
        if service.auth_disabled:
            call.key_id = "anonymous"
            return
        try:
            service.auth_failures.check(address)
            call.key_id = service.api_keys.identify(presented_key)
            if call.key_id is None:
                service.auth_failures.failed(address)
                raise UnauthorizedError(f"missing or invalid API key: send it in the {API_KEY_HEADER} header")
        except ToxiserveError as error:
            self._refused(call, error)

    def inference(self) -> InferenceService:
        """The loaded models, for calls that read them without scoring (metadata, drift)."""
        if self.service.inference is None:
            raise NotReadyError("models are still loading")
        return self.service.inference

    def score(
        self,
        call: Call,
        texts: list[str],
        version: str | None,
        operation: str,
        shape: Callable[[list[Prediction], str, str], dict],
        single: bool = False,
        client_gone: Callable[[], bool] | None = None,
        per_item: bool = False,
        detail: Detail = PLAIN,
    ) -> dict:
        """Admit, then answer `texts` with `version` (None: the canary router decides).

        `shape(predictions, model_version, request_id)` is the transport's answer body: what
        idempotency stores and replays for this `operation` (a route or RPC), so a replay is
        byte-for-byte the first answer. With `per_item`, an unusable text of a batch is answered in
        its place instead of refusing the batch. `detail` adds categories and explanations.
        """
        service = self.service
        call.text_count = None if single else len(texts)
        call.text_length = len(texts[0]) if single else None
        try:
            decision = service.rate_limiter.check(call.key_id, len(texts))
            if decision is not None:
                call.retry_headers = decision.headers()
        except ToxiserveError as error:
            self._refused(call, error)
        try:
            if service.readiness.state == STARTING or service.inference is None:
                raise NotReadyError("models are still loading")
            self._enter(call)
        except ToxiserveError as error:
            if decision is not None:
                service.rate_limiter.refund(call.key_id, len(texts))  # the service's state, not the client's doing
            self._refused(call, error)
        try:
            deadline = Deadline(service.settings.request_deadline, client_gone)

            def compute() -> dict:
                chosen = self._route(call, version)
                try:
                    if single:
                        predictions = [service.inference.predict(texts[0], chosen, deadline, detail)]
                    else:
                        predictions = service.inference.predict_batch(texts, chosen, deadline, per_item, detail)
                except Exception as exc:
                    if version is None and arm_fault(exc):
                        service.evidence.failed(call.rollout_revision, call.arm, call.key_id)
                    raise
                if version is None:
                    # Evidence for the rollout controller: this arm's latency so far and its scores.
                    seconds = time.perf_counter() - call.started
                    scores = [p.score for p in predictions if isinstance(p, Prediction)]
                    service.evidence.answered(call.rollout_revision, call.arm, seconds, scores, call.key_id)
                    if len(scores) == len(texts):
                        self._shadow(call, chosen, texts, predictions)
                return shape(predictions, chosen, call.request_id)

            if call.idempotency_key is None:  # no key to deduplicate on: each request is answered afresh
                body = compute()
            else:
                payload = {"texts": texts, "version": version, "single": single}
                if per_item:  # only then: the records of requests without it keep their fingerprint
                    payload["per_item"] = True
                if detail:  # likewise
                    payload["detail"] = detail.as_payload()
                try:
                    body, replayed = service.idempotency.run_once(
                        call.key_id,
                        call.idempotency_key,
                        operation,
                        payload,
                        compute,
                        lambda: answer_facts(call, service.rollout.current.revision),
                    )
                except ToxiserveError as error:
                    self._refused(call, error)
                if replayed:
                    call.replayed = True
                    metrics.IDEMPOTENT_REPLAYS.inc()
            call.model_version = body["model_version"]
            return body
        finally:
            service.in_flight.leave()

    def _shadow(self, call: Call, chosen: str, texts: list[str], predictions: list) -> None:
        """A routed request in the shadowed share: queue it for the shadow version (never awaited)."""
        state = self.service.rollout.current
        if state.shadow and state.shadow != chosen and state.shadows(call.request_id):
            threshold = self.service.inference.model(chosen).threshold
            self.service.shadow.submit(
                state.shadow, chosen, texts, [p.score for p in predictions], threshold, call.rollout_revision
            )

    def _enter(self, call: Call) -> None:
        """Shed load: a request that queued too long for a thread, or finds no in-flight slot."""
        service = self.service
        waited, bound = queue_wait(), service.settings.max_queue_wait
        if waited is not None and bound is not None and waited > bound:
            raise overloaded(f"request queued {waited * 1000:.0f} ms for this worker; retry shortly")
        if not service.in_flight.try_enter():
            raise overloaded("too many requests in flight; retry shortly")

    def _route(self, call: Call, version: str | None) -> str:
        if version is None:
            version, call.arm, call.rollout_revision = self.service.route(call.request_id)
        else:
            self.service.inference.check_served(version)  # 404 for a version the rollout does not name
        return version

    @staticmethod
    def _refused(call: Call, error: ToxiserveError):
        call.error_code = error.error_code
        if error.error_code in metrics.REFUSAL_CODES:
            metrics.child(metrics.REQUESTS_REFUSED, error.error_code).inc()
        raise error
