"""A small Python client for toxiserve: timeouts, retries with backoff and full jitter, one request id.

    client = ToxiserveClient("http://127.0.0.1:8000", api_key="...")  # or $TOXISERVE_URL, $TOXISERVE_API_KEY
    client.predict("some text")                  # canary router, /predict
    client.predict("some text", version="v3")    # /v1/models/v3/predict: any version the rollout names
    client.batch_predict(["a", "b"], version="v3", on_error="item")

Every retry of a call carries the same request_id (in the body, and as `Idempotency-Key` on a POST),
so the server's idempotency turns retries into replays: a call is answered once however often it
is sent. `X-Request-ID` carries it too, for correlation only.

The retry budget (60 s by default) outlasts the longest the server can make a retry wait: a claim
left by a dead host lives TOXISERVE_IDEMPOTENCY_PENDING_TTL (30 s; a dead worker's is released at
once), a duplicate waits TOXISERVE_IDEMPOTENCY_WAIT (5 s) per attempt, and scoring stops at
TOXISERVE_REQUEST_DEADLINE (10 s), inside the 15 s read timeout.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

DEFAULT_URL = "http://127.0.0.1:8000"

# 429/503: the service says "later". 502/504: a load balancer in front says its upstream died or
# timed out without an answer (a host killed mid-request): resent under the same request id, the
# request is answered once whichever host takes it.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# No answer, or only part of one: the connection failed or timed out, or broke mid-body (a server
# killed while it was sending). Each is retried, then reported as CONNECTION_FAILED.
TRANSPORT_FAILURES = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class ClientError(Exception):
    """The service answered with an error, or could not be reached (`status` 0, `CONNECTION_FAILED`),
    after retries where retrying made sense."""

    def __init__(self, status: int, error_code: str, message: str, request_id: str | None) -> None:
        super().__init__(f"{status} {error_code}: {message} (request_id={request_id})")
        self.status, self.error_code, self.message, self.request_id = status, error_code, message, request_id


class ToxiserveClient:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | tuple[float, float] = (2.0, 15.0),
        max_retries: int = 10,
        retry_budget: float = 60.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        max_retry_after: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        base_url = base_url or os.environ.get("TOXISERVE_URL") or DEFAULT_URL
        api_key = api_key or os.environ.get("TOXISERVE_API_KEY")
        if not api_key:
            raise ValueError("no API key: pass api_key or set TOXISERVE_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_budget = retry_budget
        self.backoff_base, self.backoff_cap, self.max_retry_after = backoff_base, backoff_cap, max_retry_after
        self.session = session or requests.Session()
        self._sleep, self._random = sleep, random_fraction

    def predict(
        self,
        text: str,
        version: str | None = None,
        request_id: str | None = None,
        categories: bool = False,
        explain: int = 0,
    ) -> dict[str, Any]:
        """One text: the canary router, or `version` (any version the rollout names). `categories`
        adds the category scores and labels; `explain=k` the k largest contributions with their spans."""
        path = f"/v1/models/{quote(version, safe='')}/predict" if version else "/predict"
        return self._post(path, {"text": text, **_details(categories, explain)}, request_id)

    def batch_predict(
        self,
        texts: list[str],
        version: str = "v1",
        request_id: str | None = None,
        on_error: str | None = None,
        categories: bool = False,
        explain: int = 0,
    ) -> dict[str, Any]:
        """Texts scored by `version`; `on_error="item"` answers an unusable text in its place;
        `categories` and `explain` as for `predict`, per text."""
        body: dict[str, Any] = {"texts": list(texts), **_details(categories, explain)}
        if on_error is not None:
            body["on_error"] = on_error
        return self._post(f"/v1/models/{quote(version, safe='')}/batch_predict", body, request_id)

    def models(self) -> dict[str, Any]:
        return self._send("GET", "/v1/models", None, uuid.uuid4().hex)

    def _post(self, path: str, body: dict, request_id: str | None) -> dict[str, Any]:
        request_id = request_id or uuid.uuid4().hex
        return self._send("POST", path, {**body, "request_id": request_id}, request_id)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (uniform in [0, min(cap, base * 2^attempt)]), but never sooner than Retry-After."""
        delay = self._random() * min(self.backoff_cap, self.backoff_base * 2**attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def _send(self, method: str, path: str, body: dict | None, request_id: str) -> dict[str, Any]:
        headers = {"X-API-Key": self.api_key, "X-Request-ID": request_id}
        if body is not None:  # what deduplicates, beside the body's request_id (IETF httpapi draft)
            headers["Idempotency-Key"] = request_id
        give_up_at = time.monotonic() + self.retry_budget
        for attempt in range(self.max_retries + 1):
            try:
                response = self.session.request(
                    method, self.base_url + path, json=body, headers=headers, timeout=self.timeout
                )
            except TRANSPORT_FAILURES as exc:
                # Safe to resend: the request id makes a second delivery a replay, not a second answer.
                error = ClientError(0, "CONNECTION_FAILED", f"{type(exc).__name__}: {exc}", request_id)
                retry_after = None
            else:
                if response.ok:
                    return response.json()
                error, retry_after = _client_error(response, request_id), _retry_after(response)
                # 409 with Retry-After: the same request is still running elsewhere; its answer is coming.
                if not (response.status_code in RETRY_STATUSES or (response.status_code == 409 and retry_after)):
                    raise error
            delay = self.backoff(attempt, retry_after)
            if attempt == self.max_retries or time.monotonic() + delay > give_up_at:
                raise error
            self._sleep(delay)
        raise AssertionError("unreachable")


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def _client_error(response: requests.Response, request_id: str) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    return ClientError(
        response.status_code,
        body.get("error_code", "HTTP_ERROR"),
        body.get("message", response.reason or ""),
        body.get("request_id", request_id),
    )


def _details(categories: bool, explain: int) -> dict[str, Any]:
    """The request fields for what an answer should add; none when nothing is asked (today's body)."""
    return {**({"categories": True} if categories else {}), **({"explain": explain} if explain else {})}
