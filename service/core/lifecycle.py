"""Process signals meet app state: gunicorn hooks call these (kept here so they are testable)."""

from __future__ import annotations

import logging

from flask import Flask

from service.admission.idempotency import claim_owner
from service.observability import metrics
from service.store.base import fault_cause

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
        metrics.initialise_series()
        metrics.set_rollout(service.rollout.current)
        service.start_background()  # an idle worker follows too, and loads new versions before traffic comes


def worker_stopping(app: Flask | None) -> None:
    """A worker exiting (gracefully): its last evidence to the store, the controller lease given up."""
    service = app.extensions.get("toxiserve") if app is not None else None
    if service is not None:
        service.stop_background()


def release_claims_of(app: Flask, pid: int) -> None:
    """In the gunicorn master, when worker `pid` has exited: free its pending idempotency claims."""
    service = app.extensions.get("toxiserve")
    if service is None:
        return
    owner = claim_owner(pid)
    try:
        released = service.idempotency.release_claims_of(owner)
    except Exception as exc:  # noqa: BLE001 - in the master: any raise here would stop gunicorn
        log.warning("could not release the claims of dead worker %s (%s)", pid, fault_cause(exc))
        return
    if released:
        log.warning("released %d pending request claims of dead worker %s", released, pid)
