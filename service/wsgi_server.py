"""gunicorn extension points that toxiserve plugs in from gunicorn.conf.py."""

from __future__ import annotations

import time

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from .backpressure import stamp_enqueued, start_handling


class AppLogsRequestsLogger(Logger):
    """gunicorn's logger without its access log: the app writes the one JSON line per request itself.

    With `logconfig_dict` set, gunicorn considers access logging on and builds the access-log atoms
    for every request only for a disabled logger to drop them: ~8 % of a worker's CPU under load.
    """

    def access(self, resp, req, environ, request_time) -> None:
        return None


class QueueTimedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, with two changes for a CPU-bound app:

    - it records how long each request waited for a thread, so the app can shed requests that
      queued too long (`backpressure.queue_wait`);
    - it accepts new connections only while it has a free thread. All workers poll one listening
      socket, and whichever wakes first takes a connection: a burst of new connections could land
      on one worker while the others idle, and keep-alive keeps them there. A busy worker now leaves
      new connections in the kernel's backlog, shared by all workers, for the next free thread.
      So that a saturated service cannot starve new clients behind kept-alive ones, a busy worker
      still takes one new connection every BUSY_ACCEPT_INTERVAL.
    """

    BUSY_ACCEPT_INTERVAL = 0.05

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests_queued = 0  # handed to the pool and not finished; touched by the main thread only
        self.last_accept = 0.0

    def enqueue_req(self, conn) -> None:
        stamp_enqueued(conn)
        self.requests_queued += 1
        super().enqueue_req(conn)
        self._update_accepting()

    def finish_request(self, conn, fs) -> None:
        self.requests_queued -= 1
        super().finish_request(conn, fs)
        self._update_accepting()

    def _update_accepting(self) -> None:
        # run() re-checks this every loop; doing it here too reacts the moment a thread frees up
        self.set_accept_enabled(self.alive and self.nr_conns < self.worker_connections)

    def accept(self, listener) -> None:
        self.last_accept = time.monotonic()
        super().accept(listener)

    def set_accept_enabled(self, enabled: bool) -> None:
        has_free_thread = self.requests_queued < self.cfg.threads
        super().set_accept_enabled(
            enabled and (has_free_thread or time.monotonic() - self.last_accept > self.BUSY_ACCEPT_INTERVAL)
        )

    def handle(self, conn):
        start_handling(conn)
        return super().handle(conn)
