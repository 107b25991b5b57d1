"""Idempotency by request id: a repeated id gets the stored answer; a different payload gets 409.

The store holds a sha256 of the payload and the response (scores and labels), never the text.
Transport-free: HTTP and gRPC both call `run_once`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable

from service.admission.ratelimit import StoreFailurePolicy
from service.errors import IdempotencyConflictError
from service.store import IdempotencyBackend, StoreUnavailableError


def answer_of(record: dict) -> dict:
    """The answer a stored record replays: without the facts kept beside it (keys starting with "_")."""
    return {name: value for name, value in record.items() if not name.startswith("_")}


def fingerprint(operation: str, payload: dict) -> str:
    canonical = json.dumps({"op": operation, "payload": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_HOST = socket.gethostname()  # read once: a claim is made on every request with a client id


def claim_owner(pid: int | None = None) -> str:
    """Who holds a claim: this host and process. The gunicorn master names a dead worker the same way."""
    return f"{_HOST}:{pid or os.getpid()}"


class Idempotency:
    def __init__(
        self,
        backend: IdempotencyBackend,
        policy: StoreFailurePolicy,
        ttl: float = 86_400,
        pending_ttl: float = 30,
        wait_seconds: float = 5,
    ) -> None:
        self.backend, self.policy = backend, policy
        self.ttl, self.pending_ttl, self.wait_seconds = ttl, pending_ttl, wait_seconds

    def run_once(
        self,
        owner: str,
        request_id: str,
        operation: str,
        payload: dict,
        compute: Callable[[], dict],
        kept: Callable[[], dict] | None = None,
    ) -> tuple[dict, bool]:
        """(response, replayed). `owner` (the key id) scopes ids so two clients never collide.
        `kept()`, after computing: facts stored beside the answer and never replayed (keys starting
        with "_"), such as how the request was routed."""
        key = f"{owner}:{request_id}"
        digest = fingerprint(operation, payload)
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.005
        while True:
            claim = self.policy.call("idempotency", self.backend.claim, key, digest, self.pending_ttl, claim_owner())
            if claim is None:
                return compute(), False  # failing open: serve without deduplication
            if claim.owned:
                return self._compute_and_store(key, digest, compute, kept), False
            if claim.fingerprint != digest:
                raise IdempotencyConflictError(
                    "request_id was already used with a different payload or on another endpoint",
                    details={"request_id": ["conflict"]},
                )
            if claim.done:
                return answer_of(json.loads(claim.response)), True
            # Same id and payload still running elsewhere (a concurrent retry): wait for its answer
            # rather than computing a second one. A claim whose worker died is released by the
            # gunicorn master at once (`release_claims_of`), so this loop then takes it over.
            if time.monotonic() >= deadline:
                error = IdempotencyConflictError("a request with this request_id is still in progress; retry later")
                error.headers = {"Retry-After": "1"}
                raise error
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _compute_and_store(self, key: str, digest: str, compute: Callable[[], dict], kept=None) -> dict:
        try:
            response = compute()
        except BaseException:
            self._quietly("idempotency", self.backend.release, key, digest)
            raise
        record = json.dumps({**response, **(kept() if kept else {})})
        self._quietly("idempotency", self.backend.complete, key, digest, record, self.ttl)
        return response

    def _quietly(self, operation: str, function: Callable[..., None], *args) -> None:
        try:
            self.policy.call(operation, function, *args)
        except StoreUnavailableError:
            if function is not self.backend.release:
                raise

    def release_claims_of(self, owner: str) -> int:
        """Free the pending claims of a process that died, so retries of its requests run at once."""
        return self.backend.release_owner(owner)
