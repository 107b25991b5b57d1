"""Every setting, declared once: name, type, default, bounds, environment variable and a one-line doc.

The Flask defaults (`DefaultConfig`), the typed `ServiceSettings` the service reads, the
gunicorn and gRPC process settings, and the configuration table in docs/configuration.md (held against this list
by a test) all come from `SETTINGS`. Environment variables are `TOXISERVE_<NAME>`, except where a
setting names its own (gunicorn's `PORT` and `WEB_CONCURRENCY`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import Any

SERVICE, GUNICORN, GRPC = "service", "gunicorn", "grpc"  # which process reads a setting


class ConfigError(RuntimeError):
    """The service cannot start with this configuration; the message says what to set."""


def _cpu_default_workers() -> int:
    return min(2 * (os.cpu_count() or 1) + 1, 8)


@dataclass(frozen=True)
class Setting:
    name: str  # the Flask config key
    default: Any
    doc: str
    kind: type = str  # str, int, float, bool or dict
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # None (unset) allowed
    env: str = ""  # the environment variable, if not TOXISERVE_<name>
    scope: str = SERVICE
    readme_default: str = ""  # how the docs' table shows a computed or None default
    attribute: str = field(default="", compare=False)  # ServiceSettings attribute (lower-case name)

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", self.env or f"TOXISERVE_{self.name}")
        object.__setattr__(self, "attribute", self.attribute or self.name.lower())

    def parse(self, value: Any) -> Any:
        """The value, typed and checked; ConfigError naming the variable otherwise."""
        if value is None or (value == "" and self.optional):
            if self.optional:
                return None
            value = self.default() if callable(self.default) else self.default
        if self.kind is bool:
            return value.strip().lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)
        if self.kind is dict:
            if isinstance(value, str):
                try:
                    value = json.loads(value) if value.strip() else {}
                except ValueError:
                    value = None
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f'{self.env} must be a JSON object of strings, e.g. {{"key-id": "10/second"}}')
            return value
        if self.kind in (int, float):
            try:
                number = self.kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{self.env} must be a number, got {value!r}") from None
            if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
                raise ConfigError(f"{self.env} must be between {self.low} and {self.high}, got {number}")
            return number
        text = str(value)
        if self.choices and text not in self.choices:
            raise ConfigError(f"{self.env} must be one of {self.choices}, got {value!r}")
        return text

    def from_environment(self, environ: Callable[[str], str | None] = os.environ.get) -> Any:
        return self.parse(environ(self.env))


def _model_root() -> str:
    from shared_features.registry import DEFAULT_MODEL_ROOT

    return str(DEFAULT_MODEL_ROOT)


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # --- models ---
    S("MODEL_DIR", _model_root, "the only directory models are loaded from", readme_default="`models/`"),
    S("MODEL_NAME", "toxicity", "model under the model dir"),
    S("STABLE_VERSION", "v3", "the router's stable arm: seeds the rollout state on the very first start"),
    S(
        "CANARY_VERSION",
        "v2",
        "the router's canary arm: seeds the rollout state on the very first start (loaded, so `/v2/predict` answers)",
    ),
    S(
        "CANARY_PERCENT",
        0.0,
        "canary share of routed traffic (fractions allowed): seeds the rollout state",
        float,
        0,
        100,
    ),
    S(
        "ROLLOUT_POLL_SECONDS",
        1.0,
        "how often each process reads the rollout state from the store (a change is followed within this + loading)",
        float,
        0.05,
        60,
    ),
    S("MAX_LOADED_VERSIONS", 3, "model versions a process holds at most (stable, canary, shadow)", int, 1, 20),
    S(
        "SHADOW_QUEUE",
        256,
        "per-worker queue of shadow scorings; beyond it they are dropped and counted",
        int,
        1,
        100_000,
    ),
    S(
        "ON_VERSION_MISMATCH",
        "error",
        "`warn` loads a model trained with other library versions",
        choices=("error", "warn"),
    ),
    S(
        "ALLOW_PICKLE",
        True,
        "`false` refuses at start any model without a data-only scorer (no pickle is ever loaded)",
        bool,
    ),
    S(
        "BACKGROUND_LOAD",
        False,
        "load models in a thread (servers that don't preload); `/readyz` says `starting`",
        bool,
    ),
    S(
        "COMPILED_MAX_BATCH",
        None,
        "largest batch scored text by text; bigger ones take the vectorised path (`0`: always vectorised)",
        int,
        0,
        1_000_000,
        optional=True,
        readme_default="by model",
    ),
    # --- requests ---
    S("MAX_BATCH_SIZE", 1000, "largest batch", int, 1, 100_000),
    S("MAX_TEXT_CHARS", 2000, "longest text", int, 1, 1_000_000),
    S("MAX_CONTENT_LENGTH", 4 * 1024 * 1024, "request body cap in bytes (413 beyond)", int, 1024, 1 << 30),
    S(
        "REQUEST_READ_TIMEOUT",
        10.0,
        "seconds from a request's first byte to its last, plus one per 64 KiB; slower gets 408",
        float,
        0.1,
        3600,
    ),
    S(
        "REQUEST_DEADLINE",
        10.0,
        "seconds of scoring a request may take; past it 503 `DEADLINE_EXCEEDED`",
        float,
        0.01,
        3600,
    ),
    # --- keys and limits ---
    S(
        "API_KEYS",
        "",
        "`id:key,id:key` (keys of 16 characters or more; the id `controller` is reserved);"
        " logs show the id, never the key",
        readme_default="—",
    ),
    S(
        "API_KEYS_FILE",
        None,
        "file of `id:<sha256 hex of key>` lines (no plain keys on disk)",
        optional=True,
        readme_default="—",
    ),
    S(
        "ADMIN_KEYS",
        "",
        "`id:key,...` for `/admin/*` (prediction keys get 403); no admin key: the admin API refuses everyone",
        readme_default="—",
    ),
    S("ADMIN_KEYS_FILE", None, "file of `id:<sha256 hex of key>` admin key lines", optional=True, readme_default="—"),
    S("AUTH_DISABLED", False, "serve without keys: local development only", bool),
    S(
        "RATE_LIMIT",
        "2000/second;60000/minute",
        "**texts** per API key (`limits` notation; a batch of N costs N); empty disables",
    ),
    S("RATE_LIMITS_PER_KEY", {}, 'JSON overrides by key id, e.g. `{"batch-team": "10/second"}`', dict),
    S(
        "ROUTING_KEY",
        None,
        "secret that keys each request id's arm, written with the rollout's first seed (unset: random)",
        optional=True,
        readme_default="random",
    ),
    S(
        "LABELER_KEYS",
        "",
        "key ids (`a,b`) with the `labeler` scope: only their labels on routed answers steer rollouts",
        readme_default="—",
    ),
    S(
        "AUTH_FAILURE_LIMIT",
        "30/minute",
        "failed key checks per client address; beyond, 429 with `Retry-After` until the window ends; empty disables",
    ),
    S(
        "PROXY_HOPS",
        0,
        "proxies in front that append `X-Forwarded-For`: the client address is read from them",
        int,
        0,
        10,
    ),
    # --- shared store ---
    S(
        "STORE_URL",
        "sqlite:///run/toxiserve.sqlite3",
        "rate limits, idempotency and the rollout state: the embedded SQLite file or `redis://host:6379/0`",
    ),
    S("STORE_NAMESPACE", "toxiserve", "key prefix in the store, so several services can share one"),
    S("STORE_TIMEOUT", 0.25, "seconds before an unreachable Redis counts as down", float, 0.001, 60),
    S(
        "STORE_FAILURE_MODE",
        "open",
        "store down: `open` serves unchecked, `closed` answers 503 and fails `/readyz`",
        choices=("open", "closed"),
    ),
    S("STORE_BREAKER_FAILURES", 3, "consecutive store failures that open the circuit breaker", int, 1, 1000),
    S(
        "STORE_BREAKER_COOLDOWN",
        1.0,
        "seconds the breaker stays open before one call probes the store",
        float,
        0.01,
        600,
    ),
    S("IDEMPOTENCY_TTL", 86_400.0, "seconds an answered request id is replayed", float, 1, 30 * 86_400),
    S(
        "IDEMPOTENCY_PENDING_TTL",
        30.0,
        "a claim whose whole host died frees up after this (a dead worker's at once)",
        float,
        0.1,
        3600,
    ),
    S("IDEMPOTENCY_WAIT", 5.0, "seconds a concurrent duplicate waits for the first answer", float, 0, 600),
    # --- load ---
    S("MAX_IN_FLIGHT", 32, "requests in flight per process; beyond, 503 `OVERLOADED` at once", int, 1, 10_000),
    S(
        "MAX_QUEUE_WAIT_MS",
        500.0,
        "a request that waited, or would wait, longer for a thread gets 503 `OVERLOADED`; `0` never",
        float,
        0,
        600_000,
    ),
    S("MICROBATCH", False, "single-text requests of a worker share model calls (see Performance)", bool),
    S("MICROBATCH_MAX_SIZE", 32, "texts per shared call", int, 1, 10_000),
    S("MICROBATCH_MAX_WAIT_MS", 2.0, "how long a call waits to fill", float, 0, 1000),
    S("MICROBATCH_MAX_QUEUE", 256, "queued texts per worker; beyond, 503 `OVERLOADED`", int, 1, 100_000),
    # --- observability ---
    S(
        "METRICS_TOKEN",
        None,
        "if set, `/metrics` needs `Authorization: Bearer <token>`",
        optional=True,
        readme_default="—",
    ),
    S("DRIFT_PSI_THRESHOLD", 0.2, "a feature's PSI above this reports drifted", float, 0.0001, 100),
    S("DRIFT_SAMPLE_RATE", 1.0, "share of scored texts added to the live drift profile", float, 0, 1),
    S("LOG_LEVEL", "INFO", "log level of the app, gunicorn and the gRPC process"),
    S(
        "TRACING",
        False,
        "OpenTelemetry spans per request, W3C trace context, trace ids in logs (`tracing` extra; OTEL_* set the rest)",
        bool,
    ),
    # --- processes ---
    S("BIND_HOST", "0.0.0.0", "where gunicorn and the gRPC process listen", scope=GUNICORN),
    S("PORT", 8000, "gunicorn's port", int, 1, 65535, env="PORT", scope=GUNICORN),
    S(
        "WEB_CONCURRENCY",
        _cpu_default_workers,
        "gunicorn workers",
        int,
        1,
        256,
        env="WEB_CONCURRENCY",
        scope=GUNICORN,
        readme_default="2 × cores + 1, at most 8",
    ),
    S(
        "THREADS",
        4,
        "threads per gunicorn worker (more add GIL contention for this CPU-bound app)",
        int,
        1,
        1000,
        scope=GUNICORN,
    ),
    S("WORKER_TIMEOUT", 30, "a worker silent this long is killed and replaced", int, 1, 3600, scope=GUNICORN),
    S(
        "GRACEFUL_TIMEOUT",
        20,
        "seconds in-flight requests get after SIGTERM (gunicorn and gRPC)",
        int,
        1,
        3600,
        scope=GUNICORN,
    ),
    S(
        "MAX_REQUESTS",
        20000,
        "requests before a worker is recycled (jittered by a tenth)",
        int,
        0,
        10**9,
        scope=GUNICORN,
    ),
    S(
        "METRICS_DIR",
        None,
        "Prometheus multiprocess directory (default: a fresh private one per master)",
        optional=True,
        scope=GUNICORN,
        readme_default="fresh temp dir",
    ),
    S("GRPC_PORT", 50051, "port of the gRPC process", int, 1, 65535, scope=GRPC),
    S("GRPC_THREADS", 8, "threads of the gRPC process", int, 1, 1000, scope=GRPC),
    S(
        "GRPC_METRICS_PORT",
        0,
        "port where the gRPC process serves `/metrics` (with `TOXISERVE_METRICS_TOKEN`, as the web's); 0: none",
        int,
        0,
        65535,
        scope=GRPC,
    ),
)
del S

BY_NAME = {setting.name: setting for setting in SETTINGS}


def defaults_object() -> type:
    """The Flask config defaults (`from_object`), one attribute per setting the app reads."""
    values = {
        s.name: (s.default() if callable(s.default) else s.default)
        for s in SETTINGS
        if s.env == f"TOXISERVE_{s.name}"  # PORT, WEB_CONCURRENCY: gunicorn's own names, read from the environment
    }
    return type("DefaultConfig", (), values)


DefaultConfig = defaults_object()


def _max_queue_wait(self) -> float | None:
    """Seconds, or None when the bound is off (`TOXISERVE_MAX_QUEUE_WAIT_MS=0`)."""
    return self.max_queue_wait_ms / 1000 or None


ServiceSettings = make_dataclass(
    "ServiceSettings",
    [(s.attribute, Any) for s in SETTINGS],
    frozen=True,
    namespace={
        "__doc__": "The validated, typed view of the configuration: one attribute per setting.",
        "max_queue_wait": property(_max_queue_wait),
        "__module__": __name__,
    },
)


def settings_from(config: dict) -> ServiceSettings:
    """Every setting from a Flask config (defaults, then TOXISERVE_*, then overrides), parsed and checked.
    Settings the app's config lacks (gunicorn's and the gRPC process's) come from the environment."""
    return ServiceSettings(
        **{s.attribute: s.parse(config[s.name]) if s.name in config else s.from_environment() for s in SETTINGS}
    )


def process_setting(name: str) -> Any:
    """One gunicorn or gRPC process setting, from the environment (gunicorn.conf.py, the gRPC server)."""
    return BY_NAME[name].from_environment()


def _shown(setting: Setting) -> str:
    if setting.readme_default:
        return setting.readme_default
    value = setting.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == {}:
        return "`{}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def markdown_table() -> str:
    """The configuration table in docs/configuration.md (`python -m service.settings` prints it)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.env}` | {_shown(s)} | {s.doc} |" for s in SETTINGS]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
