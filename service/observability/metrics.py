"""Prometheus metrics, correct across gunicorn workers (prometheus_client multiprocess mode).

gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh directory before anything imports
prometheus_client. Each process writes its own files there; a scrape sums them. Recycled workers
(max_requests) must neither make counters go backwards nor leave files piling up: when a worker
exits, the master folds its counter/histogram files into one archive file per type
(`archive_dead_worker`), under an exclusive lock that scrapes take shared, so no scrape ever sees
a dead worker's values twice or not at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hmac
import os

from flask import Blueprint, Response, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.mmap_dict import MmapedDict

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# 1 ms .. 1 s finely enough to read p50/p95/p99 off the buckets, then a coarse tail.
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000)

HTTP_REQUESTS = Counter("http_requests", "HTTP requests answered", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "Time to answer an HTTP request", ["route", "method"], buckets=LATENCY_BUCKETS
)
INFERENCE_DURATION = Histogram(
    "inference_duration_seconds", "Time in the model per call", ["model_version"], buckets=LATENCY_BUCKETS
)
INFERENCE_BATCH_SIZE = Histogram(
    "inference_batch_size", "Texts per model call", ["model_version"], buckets=BATCH_BUCKETS
)
CANARY_ROUTED = Counter("canary_routed", "Canary router decisions", ["arm"])
GRPC_REQUESTS = Counter("grpc_requests", "gRPC calls answered", ["method", "code"])
GRPC_DURATION = Histogram(
    "grpc_request_duration_seconds", "Time to answer a gRPC call", ["method"], buckets=LATENCY_BUCKETS
)
ROUTED_REQUESTS = Counter(
    "routed_requests", "Answers to requests the canary router routed, by arm and (HTTP) status", ["arm", "status"]
)
ROUTED_DURATION = Histogram(
    "routed_request_duration_seconds", "Time to answer a routed request, by arm", ["arm"], buckets=LATENCY_BUCKETS
)
RATE_LIMITED = Counter("rate_limited", "Requests refused by a rate limit", ["key_id"])
AUTH_FAILURES = Counter("auth_failures", "Requests with a missing or wrong API key")
OVERLOADED = Counter("overloaded", "Requests refused by load shedding: queue wait, estimated work, in-flight bound")
STORE_ERRORS = Counter("store_errors", "Shared-store operations that failed", ["operation"])
WORKER_REFUSALS = Counter(
    "http_worker_refusals",
    "Requests the gunicorn worker answered itself, before the app: slow, oversize or malformed",
    ["status", "error_code"],
)
ABANDONED_WORK = Counter(
    "abandoned_work", "Scoring stopped between chunks: its deadline passed or its client left", ["reason"]
)
STORE_CIRCUIT_OPEN = Gauge(
    "store_circuit_open", "1 while a process has stopped calling the failing store", multiprocess_mode="livemax"
)
# The admission refusals (not a client's malformed input), counted alike on every transport.
REFUSAL_CODES = ("UNAUTHORIZED", "RATE_LIMITED", "NOT_READY", "OVERLOADED", "STORE_UNAVAILABLE", "IDEMPOTENCY_CONFLICT")
REQUESTS_REFUSED = Counter(
    "requests_refused", "Requests refused by admission, alike on every transport", ["error_code"]
)
IDEMPOTENT_REPLAYS = Counter("idempotent_replays", "Requests answered from the idempotency store")
IN_FLIGHT = Gauge("in_flight_requests", "Requests being handled now", multiprocess_mode="livesum")
# Shadow scoring: the shadow version's verdict on routed traffic, compared with what the client got.
SHADOW_COMPARED = Counter(
    "shadow_compared", "Routed requests also scored by the shadow version", ["primary", "shadow", "agreement"]
)
SHADOW_SCORE_DIFFERENCE = Histogram(
    "shadow_score_difference",
    "|shadow score - primary score| per text",
    ["primary", "shadow"],
    buckets=(0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
)
SHADOW_DROPPED = Counter("shadow_dropped", "Shadow scorings not done", ["reason"])
FEEDBACK = Counter("feedback", "Labels fed back, per answer", ["model_version", "predicted", "actual"])
ROLLOUT_PLAN_DECISIONS = Counter(
    "rollout_plan_decisions", "Decisions of the rollout controller on a running plan", ["decision"]
)
ROLLOUT_ADOPT_FAILURES = Counter(
    "rollout_adopt_failures", "Rollout revisions this process could not adopt (a version that would not load here)"
)
# "mostrecent": a process that recovers sets 0 after the master (which loaded the models) set 1.
ROLLOUT_DEGRADED = Gauge(
    "rollout_degraded",
    "1 while this host serves less than the stored rollout names (a version it cannot load)",
    multiprocess_mode="livemostrecent",
)
# The rollout each process serves: after a change, every process reports the new revision within a poll.
ROLLOUT_REVISION = Gauge("rollout_revision", "Rollout revision this process routes under", multiprocess_mode="max")
ROLLOUT_CANARY_PERCENT = Gauge(
    "rollout_canary_percent", "Canary share of routed traffic, percent", multiprocess_mode="mostrecent"
)
ROLLOUT_SHADOW_PERCENT = Gauge(
    "rollout_shadow_percent", "Shadowed share of routed traffic, percent", multiprocess_mode="mostrecent"
)
MODEL_INFO = Gauge("model_info", "1 for each loaded model", ["name", "version", "sha256"], multiprocess_mode="max")
READY = Gauge(
    "service_ready", "1 when every live process is ready (0 while starting or draining)", multiprocess_mode="livemin"
)
DRIFT_OBSERVATIONS = Counter(
    "drift_observations", "Live inputs/outputs per reference-profile bin", ["model_version", "feature", "bin"]
)

bp = Blueprint("metrics", __name__)


def initialise_series() -> None:
    """Create the known label sets at zero, so alert rules and dashboards see them before the
    first event (a counter that never moved would otherwise be missing, not 0)."""
    for arm in ("stable", "canary"):
        child(CANARY_ROUTED, arm)
        child(ROUTED_DURATION, arm)
        for status in ("200", "503"):
            child(ROUTED_REQUESTS, arm, status)
    for operation in ("rate_limit", "idempotency", "ping", "file_replaced"):
        child(STORE_ERRORS, operation)
    for code in REFUSAL_CODES:
        child(REQUESTS_REFUSED, code)
    for reason in ("deadline", "client_gone"):
        child(ABANDONED_WORK, reason)
    for decision in ("advance", "hold", "rollback", "promote"):
        child(ROLLOUT_PLAN_DECISIONS, decision)
    STORE_CIRCUIT_OPEN.set(0)


def set_rollout(state) -> None:
    ROLLOUT_REVISION.set(state.revision)
    ROLLOUT_CANARY_PERCENT.set(state.canary_percent)
    ROLLOUT_SHADOW_PERCENT.set(state.shadow_percent if state.shadow else 0)


@functools.cache
def child(metric, *label_values: str):
    """`metric.labels(*label_values)`, remembered: labels() takes a lock and builds its key on every
    call, and the hot path's label values (routes, statuses, versions, arms) are few and bounded."""
    return metric.labels(*label_values)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV)


@contextlib.contextmanager
def _locked(directory: str, exclusive: bool):
    with open(os.path.join(directory, ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def collect_registry() -> CollectorRegistry:
    """Everything to expose: summed over processes in multiprocess mode, this process's otherwise."""
    directory = multiprocess_dir()
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)
    return registry


def exposition(extra_collectors=()) -> bytes:
    extra = CollectorRegistry(auto_describe=False)  # computed-at-scrape metrics (drift PSI)
    for collector in extra_collectors:
        extra.register(collector)
    directory = multiprocess_dir()
    lock = _locked(directory, exclusive=False) if directory else contextlib.nullcontext()
    with lock:
        return generate_latest(collect_registry()) + generate_latest(extra)


def read_samples(name: str, suffix: str) -> dict[tuple, float]:
    """Current values of one metric's `<name><suffix>` samples (sorted labels -> value), across
    processes where applicable: `_total` of a counter, `_sum` / `_count` of a histogram."""
    directory = multiprocess_dir()
    lock = _locked(directory, exclusive=False) if directory else contextlib.nullcontext()
    with lock:
        families = list(collect_registry().collect())
    totals: dict[tuple, float] = {}
    for family in families:
        if family.name == name:
            for sample in family.samples:
                if sample.name == f"{name}{suffix}" and "le" not in sample.labels:
                    totals[tuple(sorted(sample.labels.items()))] = sample.value
    return totals


def read_counter(name: str) -> dict[tuple, float]:
    """Current totals of one counter (labels -> value), across processes where applicable."""
    return read_samples(name, "_total")


_ARCHIVE_MERGE = {
    "counter": "sum",
    "histogram": "sum",
    "summary": "sum",
    "gauge_sum": "sum",
    "gauge_max": "max",
    "gauge_min": "min",
    "gauge_mostrecent": "mostrecent",
}


def archive_dead_worker(pid: int, directory: str | None = None) -> None:
    """Master, in child_exit: fold a dead worker's files into the archive, so totals keep counting
    and the directory holds one file per type and live process, however often workers recycle."""
    directory = directory or multiprocess_dir()
    if not directory:
        return
    with _locked(directory, exclusive=True):
        multiprocess.mark_process_dead(pid, directory)  # live* gauges of the dead: just dropped
        for path in glob.glob(os.path.join(directory, f"*_{pid}.db")):
            kind = os.path.basename(path)[: -len(f"_{pid}.db")]
            how = _ARCHIVE_MERGE.get(kind)
            if how is None:  # gauge "all"/"live*" modes are per process by definition
                os.remove(path)
                continue
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path):
                    old, old_ts = archive.read_value(key)
                    if how == "sum":
                        value = old + value
                    elif how == "max":
                        value = max(old, value) if old_ts or old else value
                    elif how == "min":
                        value = min(old, value) if old_ts or old else value
                    elif how == "mostrecent" and timestamp < old_ts:
                        value, timestamp = old, old_ts
                    archive.write_value(key, value, max(timestamp, old_ts))
            finally:
                archive.close()
            os.remove(path)


def token_accepted(token: str | None, authorization: str | None) -> bool:
    """A scrape's Authorization header against the metrics bearer token (none set: every scrape)."""
    return not token or hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())


@bp.get("/metrics")
def metrics_view():
    if not token_accepted(current_app.config.get("METRICS_TOKEN"), request.headers.get("Authorization")):
        from service.errors import UnauthorizedError

        raise UnauthorizedError("metrics need the metrics bearer token")
    service = current_app.extensions["toxiserve"]
    return Response(exposition(service.metric_collectors()), content_type=CONTENT_TYPE_LATEST)  # has its charset
