"""A circuit breaker for the shared store: a hung or dead store costs a request microseconds, not a timeout.

After `failures` consecutive failed store calls the breaker opens: for `cooldown` seconds no call
is made and the failure mode applies at once (serve unlimited, or 503 when failing closed). Then
one call probes the store (half-open): success closes the breaker, failure opens it again. One
breaker per process; its threads share it.
"""

from __future__ import annotations

import logging
import threading
import time

from service.observability import metrics

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpenError(Exception):
    """The breaker is open: the store was not called."""


class CircuitBreaker:
    def __init__(self, failures: int = 3, cooldown: float = 1.0) -> None:
        self.threshold, self.cooldown = failures, cooldown
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0  # monotonic; 0.0 while closed
        self._probing = False

    @property
    def state(self) -> str:
        if not self._open_until:
            return CLOSED
        return HALF_OPEN if self._probing or time.monotonic() >= self._open_until else OPEN

    def allow(self) -> bool:
        """May this call go to the store? While open, only one caller at a time probes it."""
        if not self._open_until:
            return True  # the hot path: closed, no lock
        with self._lock:
            if self._probing or time.monotonic() < self._open_until:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        if not (self._consecutive or self._open_until):
            return
        with self._lock:
            was_open = bool(self._open_until)
            self._consecutive, self._open_until, self._probing = 0, 0.0, False
        if was_open:
            metrics.STORE_CIRCUIT_OPEN.set(0)
            log.warning("store reachable again; circuit breaker closed")

    def failed(self) -> None:
        with self._lock:
            self._consecutive += 1
            self._probing = False
            if self._consecutive < self.threshold:
                return
            opening = not self._open_until
            self._open_until = time.monotonic() + self.cooldown
        if opening:
            metrics.STORE_CIRCUIT_OPEN.set(1)
            log.error(
                "store failed %d times in a row; circuit breaker open, probing every %.1f s",
                self._consecutive,
                self.cooldown,
            )
