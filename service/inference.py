"""The inference layer: value checks, scoring, canary routing. HTTP and gRPC both call it; it knows no transport."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass

from shared_features import LoadedModel
from shared_features.errors import UnprocessableError
from shared_features.text import screen_text

from . import metrics
from .drift_monitor import DriftMonitor
from .errors import EmptyBatchError, InferenceFailedError, NotFoundError

log = logging.getLogger(__name__)

_REASON_MESSAGES = {
    "blank": "text is blank",
    "too_long": "text is longer than {max_chars} characters",
    "null": "text is null",
    "not_a_string": "text is not a string",
}


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    model_version: str

    def as_result(self) -> dict:
        return {"label": self.label, "score": self.score}


class InferenceService:
    """Scores texts with loaded models; `stable` and `canary` are the two arms of /predict."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        stable: str,
        canary: str,
        canary_percent: float = 10.0,
        max_batch_size: int = 1000,
        max_text_chars: int = 2000,
        drift_sample_rate: float = 1.0,
    ) -> None:
        missing = {stable, canary} - models.keys()
        if missing:
            raise ValueError(f"models {sorted(missing)} are not loaded")
        self.models = models
        self.stable, self.canary = stable, canary
        self.canary_percent = canary_percent
        self.max_batch_size = max_batch_size
        self.max_text_chars = max_text_chars
        # Basis points: a percentage like 2.5 still maps onto whole hash buckets.
        self._canary_buckets = round(canary_percent * 100)
        self.drift = DriftMonitor(models)
        self.drift_sample_rate = drift_sample_rate
        self.batcher = None

    def enable_microbatching(self, max_size: int, max_wait_ms: float, max_queue: int) -> None:
        from .microbatch import MicroBatcher

        def score_batch(version: str, normalised: list[str], raw: list[str]) -> list[float]:
            return self._score(self.model(version), normalised, raw)

        self.batcher = MicroBatcher(score_batch, max_size, max_wait_ms, max_queue)

    def model(self, version: str) -> LoadedModel:
        try:
            return self.models[version]
        except KeyError:
            raise NotFoundError(f"no model version {version!r}") from None

    def choose_arm(self, request_id: str) -> str:
        """Stable in the request id: a retry with the same id lands on the same version."""
        bucket = int.from_bytes(hashlib.sha256(request_id.encode("utf-8")).digest()[:8], "big") % 10_000
        return self.canary if bucket < self._canary_buckets else self.stable

    def screen(self, text: str) -> str:
        """The normalised text, or UnprocessableError saying why it cannot be scored."""
        normalised, reason = screen_text(text, self.max_text_chars)
        if reason:
            message = _REASON_MESSAGES[reason].format(max_chars=self.max_text_chars)
            raise UnprocessableError(message, details={"text": [reason]})
        return normalised

    def screen_batch(self, texts: list[str]) -> list[str]:
        if not texts:
            raise EmptyBatchError("texts must hold at least one text")
        if len(texts) > self.max_batch_size:
            raise UnprocessableError(
                f"batch of {len(texts)} texts exceeds the limit of {self.max_batch_size}",
                details={"texts": [f"at most {self.max_batch_size} items"]},
            )
        normalised, bad = [], {}
        for index, text in enumerate(texts):
            clean, reason = screen_text(text, self.max_text_chars)
            normalised.append(clean)
            if reason:
                bad[str(index)] = [reason]
        if bad:
            raise UnprocessableError(
                f"{len(bad)} of {len(texts)} texts cannot be scored (blank or over {self.max_text_chars} characters)",
                details={"texts": bad},
            )
        return normalised

    def _score(self, model: LoadedModel, normalised: list[str], raw: list[str]) -> list[float]:
        started = time.perf_counter()
        try:
            scores, oov = model.score_with_oov(normalised, raw)
        except Exception as exc:  # a model bug must not become a 500 with a traceback
            log.exception("inference failed for model %s (%s)", model.version, type(exc).__name__)
            raise InferenceFailedError(f"model {model.version} failed to score the input") from None
        metrics.child(metrics.INFERENCE_DURATION, model.version).observe(time.perf_counter() - started)
        metrics.child(metrics.INFERENCE_BATCH_SIZE, model.version).observe(len(raw))
        if self.drift_sample_rate >= 1.0 or random.random() < self.drift_sample_rate:
            self.drift.observe(model, raw, normalised, scores, oov)
        return scores.tolist()

    def predict(self, text: str, version: str) -> Prediction:
        model = self.model(version)
        normalised = self.screen(text)
        if self.batcher is not None:
            score = self.batcher.score(version, normalised, text)
        else:
            score = self._score(model, [normalised], [text])[0]
        return Prediction("toxic" if score >= model.threshold else "clean", score, version)

    def predict_batch(self, texts: list[str], version: str) -> list[Prediction]:
        model = self.model(version)
        normalised = self.screen_batch(texts)
        threshold = model.threshold
        scores = self._score(model, normalised, texts)
        return [Prediction("toxic" if s >= threshold else "clean", s, version) for s in scores]

    def warm_up(self) -> None:
        """One prediction per model, so the first real request pays no lazy initialisation."""
        for model in self.models.values():
            text = "warm up the pipeline @user http://example.com"
            model.score_normalised([self.screen(text)], [text])  # not via _score: no metrics, no drift

    def describe(self) -> list[dict]:
        described = []
        for version, model in self.models.items():
            manifest = model.manifest
            described.append(
                {
                    "name": model.name,
                    "version": version,
                    "threshold": model.threshold,
                    "sha256": model.sha256,
                    "created_at": manifest.get("created_at"),
                    "metrics": manifest.get("metrics", {}).get("test", {}),
                    "role": "canary" if version == self.canary else "stable",
                }
            )
        return described
