"""Per-app service state (lives in app.extensions["toxiserve"]): models, readiness, keys."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from service.admission.auth import ApiKeys
from service.admission.auth_failures import AuthFailureLimit
from service.admission.backpressure import InFlightLimiter
from service.admission.idempotency import Idempotency
from service.admission.ratelimit import RateLimiter, StoreFailurePolicy, parse_limits
from service.core.dataplane import DataPlane
from service.core.inference import InferenceService
from service.core.readiness import Readiness
from service.observability import metrics
from service.rollout.controller import RolloutController
from service.rollout.evidence import EvidenceRecorder
from service.rollout.feedback import Feedback
from service.rollout.shadow import QUIET_SECONDS, ShadowScorer
from service.rollout.state import Rollout, RolloutState, seed
from service.settings import ConfigError, ServiceSettings
from service.store import StoreUnavailableError, open_store
from service.store.breaker import CircuitBreaker
from service.store.factory import shown_url
from shared_features import ModelRegistry
from shared_features.errors import ModelError, ToxiserveError

log = logging.getLogger(__name__)


def labeler_ids(setting: str) -> frozenset[str]:
    return frozenset(filter(None, (part.strip() for part in setting.split(","))))


class ServiceState:
    def __init__(self, settings: ServiceSettings, api_keys: ApiKeys, admin_keys: ApiKeys | None = None) -> None:
        self.settings = settings
        self.api_keys = api_keys
        self.admin_keys = admin_keys or ApiKeys({})
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
            self.auth_failures = AuthFailureLimit(
                self.store,
                settings.store_namespace,
                parse_limits(settings.auth_failure_limit, "TOXISERVE_AUTH_FAILURE_LIMIT"),
                policy.call,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.dataplane = DataPlane(self)
        self.registry = ModelRegistry(settings.model_dir, settings.on_version_mismatch, settings.allow_pickle)
        self._loading = threading.Lock()  # one process loads one version at a time
        self.rollout = Rollout(
            self.store.rollout,
            policy.call,
            self.prepare,
            seed(settings.stable_version, settings.canary_version, settings.canary_percent, settings.routing_key),
            settings.rollout_poll_seconds,
            settings.max_loaded_versions,
        )
        self.rollout.on_adopt.append(metrics.set_rollout)
        self.rollout.on_adopt.append(lambda _: metrics.ROLLOUT_DEGRADED.set(1 if self.rollout.degraded else 0))
        self.evidence = EvidenceRecorder(self.store.evidence, policy.call)
        self.rollout.on_poll.append(self.evidence.flush)  # the follower thread adds this process's tallies
        self.shadow = ShadowScorer(
            lambda: self.inference.models,
            settings.shadow_queue,
            lambda: not self.in_flight.quiet_for(QUIET_SECONDS),
            self.evidence.shadowed,
        )
        self.feedback = Feedback(self.store, policy, settings.idempotency_ttl, labeler_ids(settings.labeler_keys))
        self.controller = RolloutController(
            self.rollout,
            self.evidence,
            self.store.leases,
            self.feedback.matrix,
            policy.call,
            settings.rollout_poll_seconds,
        )
        self.idempotency = Idempotency(
            self.store.idempotency,
            policy,
            ttl=settings.idempotency_ttl,
            pending_ttl=settings.idempotency_pending_ttl,
            wait_seconds=settings.idempotency_wait,
        )

    def load_models(self) -> None:
        """Load, verify and warm the versions the rollout names, then (only then) report ready."""
        started = time.perf_counter()
        state = self.rollout.at_start()
        self.inference = InferenceService(
            {},
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
        try:
            self.rollout.adopt(state, force=True)
        except ToxiserveError:
            self._serve_what_loads(state)  # a stored state this host cannot serve in full never bricks a start
        self.readiness.mark_ready()
        log.info(
            "models loaded and warmed",
            extra={
                "versions": list(self.inference.models),
                "revision": state.revision,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def _serve_what_loads(self, stored: RolloutState) -> None:
        """Route under the part of `stored` that loads here: a missing stable is replaced by the
        settings' stable (else the canary), a missing canary's share goes to stable, a missing shadow
        is dropped. Raises ModelError when nothing it or the settings name loads."""
        loaded: dict[str, object] = {}
        missing: dict[str, str] = {}

        def loads(version: str) -> bool:
            if version not in loaded and version not in missing:
                try:
                    loaded[version] = self.load_version(version)
                except ToxiserveError as exc:
                    missing[version] = exc.message
            return version in loaded

        for version in stored.named:
            loads(version)
        stable = next((v for v in (stored.stable, self.settings.stable_version, stored.canary) if loads(v)), None)
        if stable is None:
            raise ModelError("; ".join(dict.fromkeys(missing.values())))  # each reason once, the stable's first
        canary_missing = stored.canary in missing or stored.canary == stable
        served = replace(
            stored,
            stable=stable,
            canary=stable if canary_missing else stored.canary,
            canary_percent=0.0 if canary_missing else stored.canary_percent,
            shadow=None if stored.shadow in missing else stored.shadow,
            shadow_percent=0.0 if stored.shadow in missing else stored.shadow_percent,
        )
        metrics.ROLLOUT_ADOPT_FAILURES.inc()
        named_missing = {version: why for version, why in missing.items() if version in stored.named}
        self.rollout.serve_degraded(stored, served, named_missing, shown_url(self.settings.store_url))

    def rollout_health(self) -> dict | None:
        """For /readyz: what of the stored rollout this process cannot serve, if anything."""
        degraded = self.rollout.degraded
        if degraded is None:
            return None
        current = self.rollout.current
        serving = {"stable": current.stable, "canary": current.canary, "canary_percent": current.canary_percent}
        return {**degraded, "serving": serving}

    def load_version(self, version: str):
        """A verified, warmed model of this version: the loaded one, or loaded now (NotFound/ModelError)."""
        loaded = self.inference.models.get(version) or self.inference.lingering.get(version)
        if loaded is not None:
            return loaded
        with self._loading:
            model = self.registry.load(self.settings.model_name, version)
            model.set_per_text_max_batch(self.settings.compiled_max_batch)
            self.inference.warm(model)
            metrics.MODEL_INFO.labels(model.name, model.version, model.sha256).set(1)
            return model

    def prepare(self, state: RolloutState, keep: tuple[str, ...] = ()) -> None:
        """Load every version `state` names (raising if one can't be), then drop the versions it
        doesn't name, except the loaded ones in `keep` (those a request may still be routed to)."""
        models = {version: self.load_version(version) for version in state.named}
        loaded = {**self.inference.lingering, **self.inference.models}
        lingering = {version: loaded[version] for version in keep if version not in models and version in loaded}
        self.inference.replace_models(models, lingering)

    def load_models_in_background(self) -> threading.Thread:
        def run() -> None:
            try:
                self.load_models()
            except Exception:
                log.exception("model loading failed; the process stays not-ready")

        thread = threading.Thread(target=run, name="toxiserve-model-loader", daemon=True)
        thread.start()
        return thread

    def roles(self) -> dict[str, str]:
        state = self.rollout.current
        roles = {state.stable: "stable"}
        if state.shadow:
            roles.setdefault(state.shadow, "shadow")
        roles.setdefault(state.canary, "canary")
        return roles

    def describe_models(self) -> list[dict]:
        return self.inference.describe(self.roles())

    def model_summary(self) -> dict:
        return {
            m["version"]: {"sha256": m["sha256"], "threshold": m["threshold"], "role": m["role"]}
            for m in self.describe_models()
        }

    def route(self, request_id: str) -> tuple[str, str, int]:
        """The router's decision, counted: (model version, arm, rollout revision) for this request id.

        One place for every transport (POST /predict, OIP infer, gRPC), so the split they report
        in `canary_routed_total` is the split they make. One read of the current state: a request
        is routed under exactly one revision.
        """
        self.start_background()
        state = self.rollout.current
        version, arm = state.arm(request_id)
        metrics.child(metrics.CANARY_ROUTED, arm).inc()
        return version, arm, state.revision

    def start_background(self) -> None:
        """This process's follower and controller threads, once per process (after fork, never in
        the gunicorn master, where a thread could hold a lock at fork)."""
        self.rollout.ensure_following()
        self.controller.ensure_running()

    def stop_background(self) -> None:
        """A process stopping: its last tallies to the store, and the controller lease given up."""
        self.evidence.flush()
        self.controller.release()

    def store_health(self) -> dict:
        """For /readyz: can this process use the store now? One ping, through the circuit breaker."""
        healthy = True
        try:
            healthy = self.store_policy.call("ping", self.store.idempotency.ping) is not None
        except StoreUnavailableError:
            healthy = False
        health = {"backend": self.store.backend, "healthy": healthy, "failure_mode": self.settings.store_failure_mode}
        if not healthy:  # what the log says too: "disk full", "read-only", "permission denied"...
            health["cause"] = self.store_policy.last_cause or "unknown"
        return health

    def on_store_error(self, operation: str) -> None:
        metrics.STORE_ERRORS.labels(operation).inc()

    def metric_collectors(self) -> list:
        """Collectors computed at scrape time (drift PSI from the shared live counts)."""
        if self.inference is None:
            return []
        return [self.inference.drift.collector(self.settings.drift_psi_threshold)]
