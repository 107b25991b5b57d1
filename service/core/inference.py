"""The inference layer: value checks and scoring with the loaded models. HTTP and gRPC both call it; it knows no
transport. Which version a routed request gets is the rollout's decision (`rollout.py`)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import numpy as np

from service.admission.deadline import Deadline
from service.errors import EmptyBatchError, InferenceFailedError, NotFoundError
from service.observability import metrics
from service.observability.drift_monitor import DriftMonitor
from shared_features import LoadedModel
from shared_features.errors import ToxiserveError, UnprocessableError
from shared_features.text import screen_text

log = logging.getLogger(__name__)

_REASON_MESSAGES = {
    "blank": "text is blank",
    "too_long": "text is longer than {max_chars} characters (or twice that once normalised)",
    "null": "text is null",
    "not_a_string": "text is not a string",
}


# Scoring with a deadline goes in chunks of at most this many texts or characters: the deadline and
# the client are checked between them (about a second of work for the char n-gram model).
CHUNK_TEXTS = 256
CHUNK_CHARS = 50_000


def _chunks(texts: list[str]) -> list[tuple[int, int]]:
    bounds, begin, chars = [], 0, 0
    for index, text in enumerate(texts):
        if index > begin and (index - begin >= CHUNK_TEXTS or chars + len(text) > CHUNK_CHARS):
            bounds.append((begin, index))
            begin, chars = index, 0
        chars += len(text)
    bounds.append((begin, len(texts)))
    return bounds


@dataclass(frozen=True)
class Detail:
    """What a request asked to add to each answer: category scores, and the top `explain` contributions."""

    categories: bool = False
    explain: int = 0

    def __bool__(self) -> bool:
        return self.categories or self.explain > 0

    def as_payload(self) -> dict:
        """For the idempotency fingerprint: the same text asked for more is another request."""
        return {"categories": self.categories, "explain": self.explain}


PLAIN = Detail()


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    model_version: str
    categories: dict[str, float] | None = None
    labels: list[str] | None = None
    explanation: list[dict] | None = None

    def as_result(self) -> dict:
        result = {"label": self.label, "score": self.score}
        return self.add_details(result)

    def add_details(self, body: dict) -> dict:
        """`body` with the fields the request asked for (none: exactly the plain answer)."""
        if self.categories is not None:
            body["categories"] = self.categories
            body["labels"] = self.labels
        if self.explanation is not None:
            body["explanation"] = self.explanation
        return body


@dataclass(frozen=True)
class ItemError:
    """A batch item that could not be scored, answered in its place (`"on_error": "item"`)."""

    error_code: str
    message: str

    def as_result(self) -> dict:
        return {"error_code": self.error_code, "message": self.message}


class InferenceService:
    """Scores texts with the loaded models (a dict replaced whole when the rollout loads or unloads one)."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        max_batch_size: int = 1000,
        max_text_chars: int = 2000,
        drift_sample_rate: float = 1.0,
    ) -> None:
        self.models = models
        self.lingering: dict[str, LoadedModel] = {}
        self.max_batch_size = max_batch_size
        self.max_text_chars = max_text_chars
        self.drift = DriftMonitor(models)
        self.drift_sample_rate = drift_sample_rate
        self.batcher = None
        self.seconds_per_char: dict[str, float] = {}

    def enable_microbatching(self, max_size: int, max_wait_ms: float, max_queue: int) -> None:
        from service.core.microbatch import MicroBatcher

        def score_batch(version: str, normalised: list[str], raw: list[str]) -> list[float]:
            return self._score(self.model(version), normalised, raw)

        self.batcher = MicroBatcher(score_batch, max_size, max_wait_ms, max_queue)

    def model(self, version: str) -> LoadedModel:
        """The model a routed request was sent to: a served one, or one the previous rollout revision
        named that is kept a moment longer (`lingering`) for requests routed under that revision."""
        model = self.models.get(version) or self.lingering.get(version)
        if model is None:
            raise self._not_served(version)
        return model

    def check_served(self, version: str) -> None:
        """404 unless the rollout names `version` now: what a request that names a version is served."""
        if version not in self.models:
            raise self._not_served(version)

    def _not_served(self, version: str) -> NotFoundError:
        return NotFoundError(
            f"model version {version!r} is not loaded: this service loads the versions its rollout names "
            f"({', '.join(self.models) or 'none yet'})"
        )

    def replace_models(self, models: dict[str, LoadedModel], lingering: dict[str, LoadedModel] | None = None) -> None:
        """Swap in a new set of served models (one attribute write: a request sees the old or the new
        set), keeping `lingering` ones reachable by `model()` only."""
        self.drift.set_models(models)
        self.lingering = lingering or {}
        self.models = models

    def screen(self, text: str) -> str:
        """The normalised text, or UnprocessableError saying why it cannot be scored."""
        normalised, reason = screen_text(text, self.max_text_chars)
        if reason:
            message = _REASON_MESSAGES[reason].format(max_chars=self.max_text_chars)
            raise UnprocessableError(message, details={"text": [reason]})
        return normalised

    def screen_batch(self, texts: list[str], per_item: bool = False) -> tuple[list[str], dict[int, ItemError]]:
        """The normalised texts; an unusable text refuses the whole batch (422), or with `per_item`
        is returned as an ItemError by its index. An empty or oversized batch is always refused."""
        if not texts:
            raise EmptyBatchError("texts must hold at least one text")
        if len(texts) > self.max_batch_size:
            raise UnprocessableError(
                f"batch of {len(texts)} texts exceeds the limit of {self.max_batch_size}",
                details={"texts": [f"at most {self.max_batch_size} items"]},
            )
        normalised, bad, refused = [], {}, {}
        for index, text in enumerate(texts):
            clean, reason = screen_text(text, self.max_text_chars)
            normalised.append(clean)
            if reason:
                bad[str(index)] = [reason]
                message = _REASON_MESSAGES[reason].format(max_chars=self.max_text_chars)
                refused[index] = ItemError(UnprocessableError.error_code, message)
        if bad and not per_item:
            raise UnprocessableError(
                f"{len(bad)} of {len(texts)} texts cannot be scored (blank or over {self.max_text_chars} characters)",
                details={"texts": bad},
            )
        return normalised, refused

    def _score(
        self, model: LoadedModel, normalised: list[str], raw: list[str], deadline: Deadline | None = None
    ) -> list[float]:
        return self._score_with_categories(model, normalised, raw, deadline, categories=False)[0]

    def _score_with_categories(
        self, model: LoadedModel, normalised: list[str], raw: list[str], deadline: Deadline | None, categories: bool
    ) -> tuple[list[float], list[list[float]] | None]:
        """Scores (and, with `categories`, P(category) per text, from the same pass over each text),
        in chunks that check the deadline, with the inference metrics and drift."""
        started = time.perf_counter()
        scores, oov, per_category = [], [], []
        for begin, end in _chunks(normalised) if deadline is not None else [(0, len(raw))]:
            if deadline is not None:
                deadline.check(client_too=begin > 0)  # a request whose time or client is gone stops here
            try:
                if categories:
                    chunk_scores, chunk_oov, chunk_categories = model.score_with_categories(
                        normalised[begin:end], raw[begin:end]
                    )
                    per_category += chunk_categories.tolist()
                else:
                    chunk_scores, chunk_oov = model.score_with_oov(normalised[begin:end], raw[begin:end])
            except Exception as exc:  # a model bug must not become a 500 with a traceback
                log.exception("inference failed for model %s (%s)", model.version, type(exc).__name__)
                raise InferenceFailedError(f"model {model.version} failed to score the input") from None
            scores.append(chunk_scores)
            oov.append(chunk_oov)
        scores = scores[0] if len(scores) == 1 else np.concatenate(scores)
        oov = oov[0] if len(oov) == 1 else None if any(o is None for o in oov) else np.concatenate(oov)
        elapsed = time.perf_counter() - started
        self._learn_cost(model.version, elapsed, sum(map(len, normalised)))
        metrics.child(metrics.INFERENCE_DURATION, model.version).observe(elapsed)
        metrics.child(metrics.INFERENCE_BATCH_SIZE, model.version).observe(len(raw))
        if self.drift_sample_rate >= 1.0 or random.random() < self.drift_sample_rate:
            self.drift.observe(model, raw, normalised, scores, oov)
        return scores.tolist(), per_category if categories else None

    def _learn_cost(self, version: str, seconds: float, chars: int) -> None:
        """Seconds per normalised character, a moving average per version: what the gunicorn worker
        multiplies a queued request's size by to tell whether it can start soon."""
        if chars < 2000:
            return  # small calls: fixed per-call overhead dominates, and they are not what queues up
        observed = seconds / chars
        previous = self.seconds_per_char.get(version)
        self.seconds_per_char[version] = observed if previous is None else 0.8 * previous + 0.2 * observed

    @property
    def max_seconds_per_char(self) -> float:
        return max(self.seconds_per_char.values(), default=0.0)

    def predict(self, text: str, version: str, deadline: Deadline | None = None, detail: Detail = PLAIN) -> Prediction:
        model = self.model(version)
        normalised = self.screen(text)
        if detail:
            scores, per_category = self._score_with_categories(
                model, [normalised], [text], deadline, detail.categories and bool(model.categories)
            )
            return self._detailed(model, [text], scores, per_category, detail, deadline)[0]
        if self.batcher is not None:
            score = self.batcher.score(version, normalised, text)
        else:
            score = self._score(model, [normalised], [text], deadline)[0]
        return Prediction("toxic" if score >= model.threshold else "clean", score, version)

    def predict_batch(
        self,
        texts: list[str],
        version: str,
        deadline: Deadline | None = None,
        per_item: bool = False,
        detail: Detail = PLAIN,
    ) -> list[Prediction | ItemError]:
        """Every text scored, in order; with `per_item`, an unusable text is an ItemError in its place."""
        model = self.model(version)
        normalised, refused = self.screen_batch(texts, per_item)
        threshold = model.threshold
        if refused:
            kept = [i for i in range(len(texts)) if i not in refused]
            normalised, texts = [normalised[i] for i in kept], [texts[i] for i in kept]
        if detail and texts:
            scores, per_category = self._score_with_categories(
                model, normalised, texts, deadline, detail.categories and bool(model.categories)
            )
            predictions = self._detailed(model, texts, scores, per_category, detail, deadline)
        else:
            scores = self._score(model, normalised, texts, deadline) if texts else []
            predictions = [Prediction("toxic" if s >= threshold else "clean", s, version) for s in scores]
        if refused:
            scored = iter(predictions)
            predictions = [refused.get(i) or next(scored) for i in range(len(refused) + len(predictions))]
        return predictions

    def _detailed(
        self,
        model: LoadedModel,
        raw: list[str],
        scores: list[float],
        per_category: list[list[float]] | None,
        detail: Detail,
        deadline: Deadline | None,
    ) -> list[Prediction]:
        """Predictions with the categories (scored with the texts) and the explanations `detail` asks
        for: explanations replay the normaliser with spans, in chunks that check the deadline."""
        names = list(model.categories)
        thresholds = [model.categories[name]["threshold"] for name in names]
        try:
            explanations: list[list[dict] | None] = [None] * len(raw)
            if detail.explain:
                if not model.explains:
                    raise UnprocessableError(
                        f"model {model.version} cannot explain its scores (it was loaded from a pickle)"
                    )
                for begin, end in _chunks(raw):
                    if deadline is not None:
                        deadline.check(client_too=begin > 0)
                    for index in range(begin, end):
                        explanations[index] = model.explain(raw[index], detail.explain)["explanation"]
        except ToxiserveError:
            raise
        except Exception as exc:
            log.exception("explaining failed for model %s (%s)", model.version, type(exc).__name__)
            raise InferenceFailedError(f"model {model.version} failed to score the input") from None
        predictions = []
        for index, score in enumerate(scores):
            categories = labels = None
            if detail.categories:
                values = per_category[index] if per_category is not None else []
                categories = dict(zip(names, values, strict=True))
                labels = [name for name, p, t in zip(names, values, thresholds, strict=True) if p >= t]
            label = "toxic" if score >= model.threshold else "clean"
            predictions.append(Prediction(label, score, model.version, categories, labels, explanations[index]))
        return predictions

    def warm(self, model: LoadedModel) -> None:
        """One prediction, so the first real request pays no lazy initialisation; and a first
        estimate of the model's cost per character, before traffic refines it."""
        text = "warm up the pipeline @user http://example.com"
        model.score_normalised([self.screen(text)], [text])  # not via _score: no metrics, no drift
        texts = [text * 20] * 8  # ~7,000 characters: a few milliseconds per model
        started = time.perf_counter()
        normalised = [self.screen(t) for t in texts]
        model.score_normalised(normalised, texts)
        self._learn_cost(model.version, time.perf_counter() - started, sum(map(len, normalised)))

    def describe(self, roles: dict[str, str]) -> list[dict]:
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
                    "categories": model.categories,
                    "intercepts": model.intercepts,
                    "role": roles.get(version, "loaded"),
                }
            )
        return described
