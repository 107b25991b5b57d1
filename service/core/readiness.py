"""Process lifecycle as the load balancer sees it: starting -> ready -> draining."""

from __future__ import annotations

import threading

from service.observability import metrics

STARTING, READY, DRAINING = "starting", "ready", "draining"
STORE_UNAVAILABLE = "store_unavailable"  # /readyz only: ready, but the store is down and we fail closed


class Readiness:
    def __init__(self) -> None:
        self._state = STARTING
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def mark_ready(self) -> None:
        with self._lock:
            if self._state == STARTING:
                self._state = READY
            self.publish()

    def begin_draining(self) -> None:
        """SIGTERM: fail readiness so no new traffic arrives, while in-flight requests finish."""
        with self._lock:
            self._state = DRAINING
            self.publish()

    def publish(self) -> None:
        """The readiness gauge; each worker calls it after fork (its gauge file starts at 0)."""
        metrics.READY.set(1 if self._state == READY else 0)
