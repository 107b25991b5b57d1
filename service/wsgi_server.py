"""gunicorn extension points that toxiserve plugs in from gunicorn.conf.py."""

from __future__ import annotations

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
    """gunicorn's gthread worker that also records how long each request waited for a thread, so the
    app can shed requests that queued too long (`backpressure.queue_wait`)."""

    def enqueue_req(self, conn) -> None:
        stamp_enqueued(conn)
        super().enqueue_req(conn)

    def handle(self, conn):
        start_handling(conn)
        return super().handle(conn)
