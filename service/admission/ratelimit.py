"""Per-API-key rate limits on the shared store, with `limits`' fixed-window algorithm. Transport-free."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import limits
from limits.strategies import FixedWindowRateLimiter

from service.errors import RateLimitedError
from service.observability import metrics
from service.store import Store, StoreUnavailableError
from service.store.base import fault_cause
from service.store.breaker import CircuitBreaker, CircuitOpenError

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateDecision:
    limit: int
    remaining: int
    reset_at: float

    def headers(self, denied: bool = False) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if denied:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_at - time.time())))
        return headers


def parse_limits(spec: str | None, setting: str = "TOXISERVE_RATE_LIMIT") -> list[limits.RateLimitItem]:
    if not spec:
        return []
    try:
        return limits.parse_many(spec)
    except ValueError as exc:
        raise ValueError(f"{setting}: {exc} (expected e.g. '100/second;5000/minute')") from None


class StoreFailurePolicy:
    """How every store call is made, and what a request does when the store fails.

    Calls go through a circuit breaker (`store.breaker`), so a hung store costs a few timeouts per
    process, then nothing. A failure (or an open breaker) is counted and logged, then 'open' serves
    the request without limits or deduplication, and 'closed' refuses it with 503: never unchecked.
    A corrupt store is logged as an error every time; other failures warn at most every 10 s.
    """

    def __init__(
        self,
        mode: str,
        errors: tuple[type[BaseException], ...],
        on_error: Callable[[str], None],
        breaker: CircuitBreaker | None = None,
        is_corruption: Callable[[BaseException], bool] = lambda exc: False,
    ) -> None:
        if mode not in ("open", "closed"):
            raise ValueError("TOXISERVE_STORE_FAILURE_MODE must be 'open' or 'closed'")
        self.mode, self.errors, self.on_error = mode, errors, on_error
        self.breaker = breaker or CircuitBreaker()
        self.is_corruption = is_corruption
        self._last_warning, self.last_cause = 0.0, ""

    def call(self, operation: str, function: Callable[..., T], *args, strict: bool = False) -> T | None:
        """`function(*args)` through the breaker; None where the store failed and the mode is open.

        `strict`: StoreUnavailableError whatever the mode, for what must not be guessed (a rollout
        change, a label, an admin read): failing open only ever skips checks, never invents state."""
        if not self.breaker.allow():
            self.failed(operation, CircuitOpenError(), strict)
            return None
        try:
            result = function(*args)
        except self.errors as exc:
            self.breaker.failed()
            self.failed(operation, exc, strict)
            return None
        except BaseException:
            self.breaker.succeeded()  # the store answered; the caller's own error (a 429, say) goes on
            raise
        self.breaker.succeeded()
        return result

    def failed(self, operation: str, exc: BaseException, strict: bool = False) -> None:
        self.on_error(operation)
        if self.is_corruption(exc):
            self.last_cause = "corrupt"
            log.error("store is corrupt (%s during %s); failing %s", exc, operation, self.mode)
        elif not isinstance(exc, CircuitOpenError):  # an open breaker repeats the cause that opened it
            now, cause = time.monotonic(), fault_cause(exc)
            # A dead store must not flood the log: each cause once, then at most every 10 s.
            if cause != self.last_cause or now - self._last_warning > 10:
                self._last_warning = now
                log.warning("store unreachable during %s (%s); failing %s", operation, cause, self.mode)
            self.last_cause = cause
        if self.mode == "closed" or strict:
            raise StoreUnavailableError("shared state store unavailable; retry later") from None


# High limits are counted in leases: a worker takes this many hits from the store in one round trip
# and hands them out locally, so a key is never admitted past its limit, while at most
# (workers x lease) of its hits can sit unused in other workers when it reaches it.
LEASE_SHARE = 1000  # a lease is at most 1/1000 of the limit: limits under 2,000 per window stay exact
MAX_LEASE = 100


def lease_size(item: limits.RateLimitItem) -> int:
    return max(1, min(MAX_LEASE, item.amount // LEASE_SHARE))


@dataclass
class _Lease:
    reset_at: float  # the store window's end; the lease dies with it
    tokens: int  # hits left to hand out in this process
    store_remaining: int  # the limit minus the store's count when the lease was taken


class RateLimiter:
    def __init__(
        self,
        store: Store,
        namespace: str,
        default: list[limits.RateLimitItem],
        per_key: dict[str, list[limits.RateLimitItem]],
        policy: StoreFailurePolicy,
    ) -> None:
        self.strategy = FixedWindowRateLimiter(store.limits)
        self.namespace = namespace
        self.default = default
        self.per_key = per_key
        self.policy = policy
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def _from_lease(self, item: limits.RateLimitItem, key: str, cost: int) -> RateDecision | None:
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.tokens < cost or lease.reset_at <= time.time():
                return None
            lease.tokens -= cost
            return RateDecision(item.amount, lease.store_remaining + lease.tokens, lease.reset_at)

    def _hit(self, item: limits.RateLimitItem, key_id: str, cost: int) -> tuple[RateDecision, bool]:
        storage = self.strategy.storage
        if not hasattr(storage, "incr_with_expiry"):
            allowed = self.strategy.hit(item, self.namespace, key_id, cost=cost)
            stats = self.strategy.get_window_stats(item, self.namespace, key_id)
            return RateDecision(item.amount, stats.remaining, stats.reset_time), allowed
        # FixedWindowRateLimiter.hit is `incr(key, expiry, cost) <= amount`, and get_window_stats reads
        # back the count and expiry: our stores return both from one round trip, for a whole lease.
        key = item.key_for(self.namespace, key_id)
        decision = self._from_lease(item, key, cost)
        if decision is not None:
            return decision, True
        taken = max(cost, lease_size(item))
        count, reset_at = storage.incr_with_expiry(key, item.get_expiry(), taken)
        granted = max(0, min(taken, item.amount - (count - taken)))
        if granted < cost:
            # Refused: give the units back, so a request too large for what is left (a batch of 21
            # under 20/minute) does not also spend the window for the requests that would fit.
            count, reset_at = storage.incr_with_expiry(key, item.get_expiry(), -taken)
            return RateDecision(item.amount, max(0, item.amount - count), reset_at), False
        store_remaining = max(0, item.amount - count)
        if granted > cost:
            with self._lock:
                self._leases[key] = _Lease(reset_at, granted - cost, store_remaining)
        return RateDecision(item.amount, store_remaining + granted - cost, reset_at), True

    def limits_for(self, key_id: str) -> list[limits.RateLimitItem]:
        return self.per_key.get(key_id, self.default)

    def check(self, key_id: str, cost: int = 1) -> RateDecision | None:
        """Charge `cost` units (one per text) to `key_id`; RateLimitedError (with headers) past any limit."""
        items = self.limits_for(key_id)
        if not items:
            return None
        return self.policy.call("rate_limit", self._charge, items, key_id, cost)

    def refund(self, key_id: str, cost: int) -> None:
        """Give back what `check` charged, for a request the service then refused for its own state
        (still loading, overloaded): a client told to retry must not pay for every try."""
        for item in self.limits_for(key_id):
            key = item.key_for(self.namespace, key_id)
            with self._lock:
                lease = self._leases.get(key)
                if lease is not None and lease.reset_at > time.time():
                    lease.tokens += cost
                    continue
            storage = self.strategy.storage
            if hasattr(storage, "incr_with_expiry"):
                self.policy.call("rate_limit", storage.incr_with_expiry, key, item.get_expiry(), -cost)

    def _charge(self, items: list[limits.RateLimitItem], key_id: str, cost: int) -> RateDecision:
        tightest = None
        for item in items:
            decision, allowed = self._hit(item, key_id, cost)
            if not allowed:
                metrics.RATE_LIMITED.labels(key_id).inc()
                if cost > item.amount:
                    message = f"a request of {cost} texts exceeds this API key's whole limit of {item}; split it"
                else:
                    message = (
                        f"rate limit {item} exceeded for this API key ({cost} texts asked, {decision.remaining} left)"
                    )
                error = RateLimitedError(message)
                error.headers = decision.headers(denied=True)
                raise error
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        return tightest
