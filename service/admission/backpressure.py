"""Load shedding in a worker: answer 503 OVERLOADED at once rather than let requests queue unseen.

Two signals, either one refuses a request:
- a bound on requests in flight in this worker (`InFlightLimiter`), which trips only when gunicorn
  has more threads than the bound;
- how long the request waited in the worker's queue for a thread (`queue_wait`, measured by the
  gunicorn worker class in `wsgi_server`). With few threads (the default: more threads than cores
  only add GIL contention), excess requests queue inside gunicorn; a request that already waited
  longer than the bound is refused at once, so a burst costs its clients a fast retry instead of
  a timeout, and the queue drains.
"""

from __future__ import annotations

import threading
import time

from service.errors import OverloadedError
from service.observability import metrics

_queue_timing = threading.local()


def overloaded(message: str) -> OverloadedError:
    """The refusal every load-shedding path raises: counted, 503 OVERLOADED, retry in a second."""
    metrics.OVERLOADED.inc()
    error = OverloadedError(message)
    error.headers = {"Retry-After": "1"}
    return error


def stamp_enqueued(conn) -> None:
    """The worker's main thread, as it hands a connection with a request to the thread pool."""
    conn.toxiserve_enqueued_at = time.monotonic()


def start_handling(conn) -> None:
    """A pool thread, as it picks the connection up: how long did it wait for a thread?"""
    enqueued_at = getattr(conn, "toxiserve_enqueued_at", None)
    _queue_timing.wait = None if enqueued_at is None else time.monotonic() - enqueued_at


def queue_wait() -> float | None:
    """Seconds the current request waited for a thread; None outside the toxiserve gunicorn worker."""
    return getattr(_queue_timing, "wait", None)


class InFlightLimiter:
    """Non-blocking: a request either gets a slot now or is turned away now."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # One lock around a count: a semaphore (a condition variable and its own lock, in Python)
        # cost more than the rest of admission, for a wait that never blocks.
        self._lock = threading.Lock()
        self.in_flight = 0
        self.last_left = 0.0  # monotonic time the last request left: background work waits for quiet

    def quiet_for(self, seconds: float) -> bool:
        """No request in flight, and none for `seconds`: room for background work (shadow scoring)."""
        return self.in_flight == 0 and time.monotonic() - self.last_left >= seconds

    def try_enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        return True

    def leave(self) -> None:
        with self._lock:
            if self.in_flight <= 0:
                raise ValueError("leave() without try_enter()")  # as the bounded semaphore refused it
            self.in_flight -= 1
            self.last_left = time.monotonic()
        metrics.IN_FLIGHT.dec()
