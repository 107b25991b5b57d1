"""Per-app service state (lives in app.extensions["toxiserve"]): models, readiness, keys."""

from __future__ import annotations

import logging
import threading
import time

from shared_features import ModelRegistry

from . import metrics
from .auth import ApiKeys
from .backpressure import InFlightLimiter
from .config import ConfigError, ServiceSettings
from .dataplane import DataPlane
from .idempotency import Idempotency
from .inference import InferenceService
from .ratelimit import RateLimiter, StoreFailurePolicy, parse_limits
from .readiness import Readiness
from .store import StoreUnavailableError, open_store
from .store.breaker import CircuitBreaker

log = logging.getLogger(__name__)


class ServiceState:
    def __init__(self, settings: ServiceSettings, api_keys: ApiKeys) -> None:
        self.settings = settings
        self.api_keys = api_keys
        self.auth_disabled = settings.auth_disabled
        self.readiness = Readiness()
        metrics.initialise_series()
        self.inference: InferenceService | None = None
        self.in_flight = InFlightLimiter(settings.max_in_flight)
        try:
            self.store = open_store(settings.store_url, settings.store_namespace, settings.store_timeout)
            self.store_policy = policy = StoreFailurePolicy(
                settings.store_failure_mode,
                self.store.errors,
                self.on_store_error,
                CircuitBreaker(settings.store_breaker_failures, settings.store_breaker_cooldown),
                self.store.is_corruption,
            )
            per_key = {
                key_id: parse_limits(spec, f"TOXISERVE_RATE_LIMITS_PER_KEY[{key_id}]")
                for key_id, spec in settings.rate_limits_per_key.items()
            }
            self.rate_limiter = RateLimiter(
                self.store, settings.store_namespace, parse_limits(settings.rate_limit), per_key, policy
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.dataplane = DataPlane(self)
        self.idempotency = Idempotency(
            self.store.idempotency,
            policy,
            ttl=settings.idempotency_ttl,
            pending_ttl=settings.idempotency_pending_ttl,
            wait_seconds=settings.idempotency_wait,
        )

    def load_models(self) -> None:
        """Load and verify both arms' artifacts, warm them up, then (only then) report ready."""
        started = time.perf_counter()
        registry = ModelRegistry(self.settings.model_dir, self.settings.on_version_mismatch, self.settings.allow_pickle)
        versions = dict.fromkeys((self.settings.stable_version, self.settings.canary_version))
        models = {version: registry.load(self.settings.model_name, version) for version in versions}
        for model in models.values():
            model.set_per_text_max_batch(self.settings.compiled_max_batch)
        self.inference = InferenceService(
            models,
            stable=self.settings.stable_version,
            canary=self.settings.canary_version,
            canary_percent=self.settings.canary_percent,
            max_batch_size=self.settings.max_batch_size,
            max_text_chars=self.settings.max_text_chars,
            drift_sample_rate=self.settings.drift_sample_rate,
        )
        if self.settings.microbatch:
            self.inference.enable_microbatching(
                self.settings.microbatch_max_size,
                self.settings.microbatch_max_wait_ms,
                self.settings.microbatch_max_queue,
            )
        self.inference.warm_up()
        for model in models.values():
            metrics.MODEL_INFO.labels(model.name, model.version, model.sha256).set(1)
        self.readiness.mark_ready()
        log.info(
            "models loaded and warmed",
            extra={"versions": list(models), "seconds": round(time.perf_counter() - started, 3)},
        )

    def load_models_in_background(self) -> threading.Thread:
        def run() -> None:
            try:
                self.load_models()
            except Exception:
                log.exception("model loading failed; the process stays not-ready")

        thread = threading.Thread(target=run, name="toxiserve-model-loader", daemon=True)
        thread.start()
        return thread

    def model_summary(self) -> dict:
        return {
            m["version"]: {"sha256": m["sha256"], "threshold": m["threshold"], "role": m["role"]}
            for m in self.inference.describe()
        }

    def route(self, request_id: str) -> tuple[str, str]:
        """The canary router's decision, counted: (model version, arm) for this request id.

        One place for every transport (POST /predict, OIP infer, gRPC), so the split they report
        in `canary_routed_total` is the split they make.
        """
        version = self.inference.choose_arm(request_id)
        arm = "canary" if version == self.inference.canary else "stable"
        metrics.child(metrics.CANARY_ROUTED, arm).inc()
        return version, arm

    def store_health(self) -> dict:
        """For /readyz: can this process use the store now? One ping, through the circuit breaker."""
        healthy = True
        try:
            healthy = self.store_policy.call("ping", self.store.idempotency.ping) is not None
        except StoreUnavailableError:
            healthy = False
        return {"backend": self.store.backend, "healthy": healthy, "failure_mode": self.settings.store_failure_mode}

    def on_store_error(self, operation: str) -> None:
        metrics.STORE_ERRORS.labels(operation).inc()

    def metric_collectors(self) -> list:
        """Collectors computed at scrape time (drift PSI from the shared live counts)."""
        if self.inference is None:
            return []
        return [self.inference.drift.collector(self.settings.drift_psi_threshold)]
