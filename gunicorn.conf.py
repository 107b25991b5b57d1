"""gunicorn settings for toxiserve (`gunicorn -c gunicorn.conf.py "service:create_app()"`)."""

import errno
import functools
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile

# Start-up (imports, unpickling two vocabularies) allocates millions of objects that live forever;
# collecting them is pure cost (~200 ms of the cold start). GC comes back on in `when_ready`, after
# everything the master allocated is frozen, before any worker forks.
gc.disable()

# Import only what serving needs. Serving from data-only scorers imports no scikit-learn at all; a
# model served from its pickle does, and scikit-learn imports pandas (and pandas pyarrow) whenever
# it is installed: ~0.2 s that nothing the web process runs uses (the batch job does, in its own
# process). A None in sys.modules makes such optional imports skip; an `import pandas` in serving
# code would raise ModuleNotFoundError (tests run the real server).
sys.modules.setdefault("pandas", None)

# Prometheus multiprocess mode: every process writes its metrics to files in one directory that a
# scrape sums. It must be set before anything imports prometheus_client (the app is preloaded right
# after this file runs), and start empty. TOXISERVE_METRICS_DIR names it; by default each master
# gets a fresh private one, so two services on one host never mix their counts.
# gunicorn runs this file again on SIGHUP (a config reload) in the same master: the directory, and
# the counts in it, must then stay, or Prometheus would see every counter reset without a restart.
_METRICS_OWNER = "_TOXISERVE_METRICS_DIR_OF_MASTER"
_reloading = os.environ.get(_METRICS_OWNER, "").startswith(f"{os.getpid()}:")
_own_metrics_dir = "TOXISERVE_METRICS_DIR" not in os.environ
if _reloading:
    _own_metrics_dir = os.environ[_METRICS_OWNER].endswith(":own")
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
else:
    metrics_dir = os.environ.get("TOXISERVE_METRICS_DIR") or tempfile.mkdtemp(prefix="toxiserve-metrics-")
    os.makedirs(metrics_dir, exist_ok=True)
    for _stale in os.listdir(metrics_dir):
        if _stale.endswith(".db"):
            os.remove(os.path.join(metrics_dir, _stale))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[_METRICS_OWNER] = f"{os.getpid()}:{'own' if _own_metrics_dir else 'given'}"

# Settings are declared once, in service/settings.py (imported only now: the metrics directory must
# be in the environment before anything imports prometheus_client).
from service.settings import process_setting  # noqa: E402

# 12-factor: the platform says where to listen; 0.0.0.0 so a container's port mapping reaches us.
bind = f"{process_setting('BIND_HOST')}:{process_setting('PORT')}"


def _refuse_a_taken_port(address: str) -> None:
    """A second server on a taken port would load the models first, then retry binding for seconds
    and say "Can't connect": say what is wrong at once instead."""
    if _reloading or os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS"):
        return  # a SIGHUP reload (this master holds the port), a re-exec or systemd: sockets handed over
    host, _, port = address.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                sys.exit(f"Error: {address} is already in use by another server (set PORT to another port)")


_refuse_a_taken_port(bind)

# Scoring is CPU-bound: about two workers per core; capped so a big host doesn't fork dozens of model copies.
workers = process_setting("WEB_CONCURRENCY")

# Threads let a worker keep connections alive and overlap I/O (store round trips, slow clients);
# scoring still takes turns on the GIL, so past a few threads they only add contention: 4 threads
# served ~1.7x the requests/s of 48 at 32 connections (wrk, TOXISERVE_THREADS varied; README,
# Performance). The worker class reads each request whole before a thread sees it, refuses at once
# work that cannot start soon, and measures each request's wait for a thread (service/http/wsgi_server.py).
worker_class = "service.http.wsgi_server.QueueTimedThreadWorker"
threads = process_setting("THREADS")

# Load models once in the master; workers share the pages copy-on-write and start already warm.
preload_app = True

# A request that takes this long is stuck, not slow: the worker is killed and replaced.
timeout = process_setting("WORKER_TIMEOUT")

# SIGTERM: this long for in-flight requests to finish before workers are killed.
graceful_timeout = process_setting("GRACEFUL_TIMEOUT")

# Behind a load balancer that reuses connections, keep them a little longer than it does.
keepalive = 5

# Recycle workers now and then to bound slow leaks; jitter so they don't all restart at once.
max_requests = process_setting("MAX_REQUESTS")
max_requests_jitter = max_requests // 10

# The app writes one JSON line per request itself (with request id, model, key id); no second access log.
accesslog = None
logger_class = "service.http.wsgi_server.AppLogsRequestsLogger"
errorlog = "-"
loglevel = process_setting("LOG_LEVEL").lower()
# gunicorn's own messages as JSON lines on stdout too, so one parser reads everything.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "service.observability.logs.json_formatter"}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        # The app's own JSON handler (request and trace ids). Declared here, not only added by the
        # app: gunicorn re-applies this dict on SIGHUP, and a root without it lost every app log
        # line (requests, rollouts) until the next restart.
        "app": {"()": "service.observability.logs.app_handler"},
    },
    "root": {"level": loglevel.upper(), "handlers": ["app"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": loglevel.upper(), "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
}

# Keep the master's name visible in ps/top.
proc_name = "toxiserve"


def never_raises(hook):
    """A hook that raises in the master stops gunicorn (a read-only store did, at a worker's exit):
    every hook logs its failure instead, and the server goes on."""

    @functools.wraps(hook)
    def guarded(*args):
        try:
            return hook(*args)
        except Exception as exc:  # noqa: BLE001 - nothing may escape into the arbiter
            logging.getLogger("gunicorn.error").error("%s failed: %s: %s", hook.__name__, type(exc).__name__, exc)
        return None

    return guarded


@never_raises
def when_ready(server):
    gc.freeze()
    gc.enable()


@never_raises
def pre_fork(server, worker):
    # Move everything the master allocated (models included) out of the GC's reach, so collections
    # in workers don't touch those pages and break copy-on-write sharing.
    gc.freeze()


@never_raises
def child_exit(server, worker):
    # Fold the dead worker's counters into the archive: totals never go backwards, files stay bounded.
    from service.core.lifecycle import release_claims_of
    from service.observability.metrics import archive_dead_worker

    archive_dead_worker(worker.pid)
    # A worker killed mid-request leaves its idempotency claims pending: free them now, so the
    # client's retry runs at once instead of waiting for the claim to expire.
    release_claims_of(server.app.wsgi(), worker.pid)


@never_raises
def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@never_raises
def worker_exit(server, worker):
    # A worker leaving gracefully (SIGTERM, max_requests): its last rollout evidence reaches the
    # store, and a controller lease it holds is given up so another process takes over at once.
    from service.core.lifecycle import worker_stopping

    worker_stopping(getattr(worker, "wsgi", None))  # None if it never finished booting


@never_raises  # a raise here fails the worker's boot, and gunicorn then halts
def post_worker_init(worker):
    from service.core.lifecycle import begin_draining, worker_started

    # gunicorn's SIGTERM handler stops the worker gracefully; first flip readiness to draining.
    graceful_exit = worker.handle_exit

    def drain_then_exit(sig, frame):
        begin_draining(worker.wsgi)
        graceful_exit(sig, frame)

    signal.signal(signal.SIGTERM, drain_then_exit)
    # A forked worker's gauges start at 0 in its own file: publish its readiness.
    worker_started(worker.wsgi)


# We don't use gunicornc; its fixed socket path would collide when several instances share a host.
control_socket_disable = True
