"""Service configuration: defaults here, then TOXISERVE_* environment variables, then the caller's overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared_features.registry import DEFAULT_MODEL_ROOT
from shared_features.text import MAX_TEXT_CHARS


class ConfigError(RuntimeError):
    """The service cannot start with this configuration; the message says what to set."""


class DefaultConfig:
    MODEL_DIR = str(DEFAULT_MODEL_ROOT)  # TOXISERVE_MODEL_DIR: models are loaded only from here
    MODEL_NAME = "toxicity"
    STABLE_VERSION = "v1"  # served at /v1/*, and by /predict for most traffic
    CANARY_VERSION = "v2"  # served at /v2/*, and by /predict for CANARY_PERCENT of traffic
    CANARY_PERCENT = 10.0
    MAX_BATCH_SIZE = 1000
    MAX_TEXT_CHARS = MAX_TEXT_CHARS
    MAX_CONTENT_LENGTH = 4 * 1024 * 1024  # Flask's own: bodies over this get 413 before parsing
    REQUEST_READ_TIMEOUT = 10.0  # seconds from a request's first byte to its last; slower clients get 408
    REQUEST_DEADLINE = 10.0  # seconds of scoring a request may take; past it, 503 DEADLINE_EXCEEDED
    API_KEYS = ""  # "id:key,id:key"
    API_KEYS_FILE = None  # lines "id:sha256-hex-of-key"
    AUTH_DISABLED = False  # local development only: serves without keys
    ON_VERSION_MISMATCH = "error"  # or "warn": load models trained with other library versions
    STORE_URL = "sqlite:///run/toxiserve.sqlite3"  # embedded, shared by this host's workers; or redis://...
    STORE_NAMESPACE = "toxiserve"  # key prefix, so several services can share one Redis
    STORE_TIMEOUT = 0.25  # seconds: a dead Redis costs a request this much, not the worker timeout
    STORE_FAILURE_MODE = "open"  # store unreachable: "open" serves (warning + counter), "closed" is 503
    STORE_BREAKER_FAILURES = 3  # consecutive store failures that open the circuit breaker
    STORE_BREAKER_COOLDOWN = 1.0  # seconds the breaker stays open before one call probes the store
    RATE_LIMIT = "2000/second;60000/minute"  # texts per API key (a batch of N costs N); empty disables
    RATE_LIMITS_PER_KEY = {}  # {"key-id": "10/second"}: overrides for some keys
    IDEMPOTENCY_TTL = 86_400  # seconds a request id's answer is replayed
    IDEMPOTENCY_PENDING_TTL = 30  # a claim whose request died (worker killed) frees up after this
    IDEMPOTENCY_WAIT = 5.0  # seconds a duplicate waits for the first request's answer
    MAX_IN_FLIGHT = 32  # per worker; past it 503 OVERLOADED at once (trips only with TOXISERVE_THREADS above it)
    MAX_QUEUE_WAIT_MS = 500  # a request that waited longer for a worker thread gets 503 OVERLOADED; 0: never
    METRICS_TOKEN = None  # if set, /metrics needs "Authorization: Bearer <token>"; else open like probes
    DRIFT_PSI_THRESHOLD = 0.2  # a feature's PSI above this reports drifted
    DRIFT_SAMPLE_RATE = 1.0  # share of scored texts added to the live drift profile
    COMPILED_MAX_BATCH = None  # override the compiled scorer's batch-size crossover; 0 turns it off
    MICROBATCH = False  # opt in: single-text requests of a worker share model calls (see README)
    MICROBATCH_MAX_SIZE = 32
    MICROBATCH_MAX_WAIT_MS = 2.0
    MICROBATCH_MAX_QUEUE = 256
    BACKGROUND_LOAD = False  # load models in a thread (non-preloading servers); /readyz says "starting"
    LOG_LEVEL = "INFO"


@dataclass(frozen=True)
class ServiceSettings:
    """The validated, typed view of the Flask config that the service reads."""

    model_dir: str
    model_name: str
    stable_version: str
    canary_version: str
    canary_percent: float
    max_batch_size: int
    max_text_chars: int
    max_content_length: int
    request_read_timeout: float
    request_deadline: float
    on_version_mismatch: str
    background_load: bool
    auth_disabled: bool
    log_level: str
    store_url: str
    store_namespace: str
    store_timeout: float
    store_failure_mode: str
    store_breaker_failures: int
    store_breaker_cooldown: float
    rate_limit: str
    rate_limits_per_key: dict
    idempotency_ttl: float
    idempotency_pending_ttl: float
    idempotency_wait: float
    max_in_flight: int
    max_queue_wait: float | None
    drift_psi_threshold: float
    drift_sample_rate: float
    compiled_max_batch: int | None
    microbatch: bool
    microbatch_max_size: int
    microbatch_max_wait_ms: float
    microbatch_max_queue: int


def _number(config: dict, key: str, kind: type, low: float, high: float) -> Any:
    value = config[key]
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"TOXISERVE_{key} must be a number, got {config[key]!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"TOXISERVE_{key} must be between {low} and {high}, got {value}")
    return value


def _choice(config: dict, key: str, allowed: tuple[str, ...]) -> str:
    if config[key] not in allowed:
        raise ConfigError(f"TOXISERVE_{key} must be one of {allowed}, got {config[key]!r}")
    return config[key]


def _mapping(config: dict, key: str) -> dict:
    value = config[key] or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f'TOXISERVE_{key} must be a JSON object of strings, e.g. {{"key-id": "10/second"}}')
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def settings_from(config: dict) -> ServiceSettings:
    _choice(config, "ON_VERSION_MISMATCH", ("error", "warn"))
    return ServiceSettings(
        model_dir=str(config["MODEL_DIR"]),
        model_name=str(config["MODEL_NAME"]),
        stable_version=str(config["STABLE_VERSION"]),
        canary_version=str(config["CANARY_VERSION"]),
        canary_percent=_number(config, "CANARY_PERCENT", float, 0, 100),
        max_batch_size=_number(config, "MAX_BATCH_SIZE", int, 1, 100_000),
        max_text_chars=_number(config, "MAX_TEXT_CHARS", int, 1, 1_000_000),
        max_content_length=_number(config, "MAX_CONTENT_LENGTH", int, 1024, 1 << 30),
        request_read_timeout=_number(config, "REQUEST_READ_TIMEOUT", float, 0.1, 3600),
        request_deadline=_number(config, "REQUEST_DEADLINE", float, 0.01, 3600),
        on_version_mismatch=config["ON_VERSION_MISMATCH"],
        background_load=_flag(config["BACKGROUND_LOAD"]),
        auth_disabled=_flag(config["AUTH_DISABLED"]),
        log_level=str(config["LOG_LEVEL"]).upper(),
        store_url=str(config["STORE_URL"]),
        store_namespace=str(config["STORE_NAMESPACE"]),
        store_timeout=_number(config, "STORE_TIMEOUT", float, 0.001, 60),
        store_failure_mode=_choice(config, "STORE_FAILURE_MODE", ("open", "closed")),
        store_breaker_failures=_number(config, "STORE_BREAKER_FAILURES", int, 1, 1000),
        store_breaker_cooldown=_number(config, "STORE_BREAKER_COOLDOWN", float, 0.01, 600),
        rate_limit=str(config["RATE_LIMIT"] or ""),
        rate_limits_per_key=_mapping(config, "RATE_LIMITS_PER_KEY"),
        idempotency_ttl=_number(config, "IDEMPOTENCY_TTL", float, 1, 30 * 86_400),
        idempotency_pending_ttl=_number(config, "IDEMPOTENCY_PENDING_TTL", float, 0.1, 3600),
        idempotency_wait=_number(config, "IDEMPOTENCY_WAIT", float, 0, 600),
        max_in_flight=_number(config, "MAX_IN_FLIGHT", int, 1, 10_000),
        max_queue_wait=_number(config, "MAX_QUEUE_WAIT_MS", float, 0, 600_000) / 1000 or None,
        drift_psi_threshold=_number(config, "DRIFT_PSI_THRESHOLD", float, 0.0001, 100),
        drift_sample_rate=_number(config, "DRIFT_SAMPLE_RATE", float, 0, 1),
        compiled_max_batch=None
        if config["COMPILED_MAX_BATCH"] is None
        else _number(config, "COMPILED_MAX_BATCH", int, 0, 1_000_000),
        microbatch=_flag(config["MICROBATCH"]),
        microbatch_max_size=_number(config, "MICROBATCH_MAX_SIZE", int, 1, 10_000),
        microbatch_max_wait_ms=_number(config, "MICROBATCH_MAX_WAIT_MS", float, 0, 1000),
        microbatch_max_queue=_number(config, "MICROBATCH_MAX_QUEUE", int, 1, 100_000),
    )
