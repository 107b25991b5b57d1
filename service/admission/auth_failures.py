"""Failed key checks, limited per client address: guessing keys costs 429s, not free 401s.

Each failed check (a prediction key or an admin key) is counted (`auth_failures_total`) and charged
to the client's address in a fixed window on the shared store, so every worker and host counts the
same guesses. Past the limit the address is refused with 429 and `Retry-After` *before* its key is
checked, until the window ends. The block is remembered in the process, so a request with a right
key costs no store call, and a blocked client costs none either. A store failure never turns a 401
into a 503: the failure is recorded by the store policy and the guess is simply not charged.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import limits
from limits.strategies import FixedWindowRateLimiter

from service.errors import RateLimitedError
from service.observability import metrics
from service.store import Store, StoreUnavailableError

log = logging.getLogger(__name__)

MAX_REMEMBERED_BLOCKS = 10_000  # addresses a process remembers as blocked; expired ones go first


class AuthFailureLimit:
    def __init__(self, store: Store, namespace: str, items: list[limits.RateLimitItem], call_store) -> None:
        self.strategy = FixedWindowRateLimiter(store.limits)
        self.namespace = f"{namespace}:auth-failures"
        self.items = items
        self.call_store = call_store  # StoreFailurePolicy.call
        self._blocked: dict[str, float] = {}  # address -> when its window ends (epoch seconds)
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        """Before a key is checked: 429 if `address` is blocked."""
        until = self._blocked.get(address)
        if until is not None:
            if until > time.time():
                raise self._refusal(until)
            with self._lock:
                self._blocked.pop(address, None)

    def failed(self, address: str) -> None:
        """After a failed check: count it; 429 instead of 401 once `address` is past the limit."""
        metrics.AUTH_FAILURES.inc()
        for item in self.items:
            try:
                allowed = self.call_store("auth_failures", self.strategy.hit, item, self.namespace, address)
            except StoreUnavailableError:
                return  # failing closed refuses service, not this answer: the key was wrong either way
            if allowed is False:
                stats = self.call_store("auth_failures", self.strategy.get_window_stats, item, self.namespace, address)
                until = stats.reset_time if stats is not None else time.time() + item.get_expiry()
                self._block(address, until)
                log.warning("client %s refused after %d failed key checks in %s", address, item.amount, item)
                raise self._refusal(until)

    def _block(self, address: str, until: float) -> None:
        with self._lock:
            if len(self._blocked) >= MAX_REMEMBERED_BLOCKS:
                now = time.time()
                self._blocked = {a: t for a, t in self._blocked.items() if t > now}
                if len(self._blocked) >= MAX_REMEMBERED_BLOCKS:  # all live: the store still counts them
                    self._blocked.clear()
            self._blocked[address] = until

    @staticmethod
    def _refusal(until: float) -> RateLimitedError:
        error = RateLimitedError("too many failed key checks from this address; retry later")
        error.headers = {"Retry-After": str(max(1, math.ceil(until - time.time())))}
        return error
