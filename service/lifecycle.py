"""Process signals meet app state: gunicorn hooks call these (kept here so they are testable)."""

from __future__ import annotations

import logging

from flask import Flask

log = logging.getLogger(__name__)


def begin_draining(app: Flask) -> None:
    """On SIGTERM: /readyz answers 503 draining while in-flight requests complete."""
    service = app.extensions.get("toxiserve")
    if service is not None:
        service.readiness.begin_draining()
        log.info("draining: readiness now fails; finishing in-flight requests")


def worker_started(app: Flask) -> None:
    """After fork: publish this worker's readiness gauge (multiprocess gauges are per process)."""
    service = app.extensions.get("toxiserve")
    if service is not None:
        service.readiness.publish()
