"""Per-app service state (lives in app.extensions["toxiserve"]): models, readiness, keys."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from shared_features import ModelRegistry

from .auth import ApiKeys
from .config import ServiceSettings
from .inference import InferenceService
from .readiness import Readiness

log = logging.getLogger(__name__)


class ServiceState:
    def __init__(self, settings: ServiceSettings, api_keys: ApiKeys) -> None:
        self.settings = settings
        self.api_keys = api_keys
        self.auth_disabled = settings.auth_disabled
        self.readiness = Readiness()
        self.inference: InferenceService | None = None
        self.canary_decisions: Counter[str] = Counter()

    def load_models(self) -> None:
        """Load and verify both arms' artifacts, warm them up, then (only then) report ready."""
        started = time.perf_counter()
        registry = ModelRegistry(self.settings.model_dir, self.settings.on_version_mismatch)
        versions = dict.fromkeys((self.settings.stable_version, self.settings.canary_version))
        models = {version: registry.load(self.settings.model_name, version) for version in versions}
        self.inference = InferenceService(
            models,
            stable=self.settings.stable_version,
            canary=self.settings.canary_version,
            canary_percent=self.settings.canary_percent,
            max_batch_size=self.settings.max_batch_size,
            max_text_chars=self.settings.max_text_chars,
        )
        self.inference.warm_up()
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

    def on_canary_decision(self, arm: str, version: str) -> None:
        self.canary_decisions[arm] += 1
