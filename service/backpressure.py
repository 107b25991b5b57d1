"""A bound on requests in flight in this worker: past it, answer 503 OVERLOADED at once, never queue."""

from __future__ import annotations

import threading

from . import metrics


class InFlightLimiter:
    """Non-blocking: a request either gets a slot now or is turned away now."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.in_flight = 0

    def try_enter(self) -> bool:
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
        metrics.IN_FLIGHT.dec()
        self._slots.release()
