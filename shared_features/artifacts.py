"""Model artifacts: `<root>/<name>/<version>/` with a manifest, a data-only scorer and the pickle.

    manifest.json   threshold, metrics, params, the sha256 of every file below, fingerprints
    scorer.json/npz the data-only scorer (`scorer_artifact.py`): what serving loads, numpy only
    model.joblib    the fitted scikit-learn pipeline (`pickled.py`): for training tools and for
                    models that have no data-only scorer, and only if pickles are allowed

`load_artifact` prefers the data-only scorer and then never opens the pickle, so a pickle that
would run code when loaded is never loaded. Every file is verified against the manifest's sha256
before it is parsed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FeatureCodeMismatchError, ModelError
from .layout import MANIFEST_FILE, VERSION_POLICIES
from .pickled import HEADS_FILE, MODEL_FILE, SERIALIZER, dump, library_versions, load_pipeline
from .scorer import LinearScorer
from .scorer_artifact import (
    UnsupportedPipeline,
    check_reproduces,
    format_of,
    from_pipeline,
    read_scorer,
    write_scorer,
)
from .text import feature_fingerprint, normalize_texts

log = logging.getLogger(__name__)

# Largest batch the per-text path scores; bigger ones take the vectorised path. Measured crossover
# (bench/scorer_bench.py): word n-grams between 4 and 8 texts; char n-grams at 1-2 (their many
# n-grams per text soon outweigh numpy's fixed cost per call).
PER_TEXT_MAX_BATCH = {"word_ngrams": 6, "char_wb_ngrams": 1}


class PickleRefusedError(ModelError):
    """The model has no data-only scorer, and loading pickles is turned off."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LoadedModel:
    """A verified model: its data-only scorer (or, failing that, its unpickled pipeline) and manifest."""

    name: str
    version: str
    manifest: dict[str, Any]
    path: Path
    scorer: LinearScorer | None = None
    pipeline: Any = None  # only when loaded from the pickle
    warnings: list[str] = field(default_factory=list)
    per_text_max_batch: int = 0

    def __post_init__(self) -> None:
        if self.scorer is None and self.pipeline is None:
            raise ValueError("a LoadedModel needs a scorer or a pipeline")
        if self.scorer is not None and not self.per_text_max_batch:
            self.per_text_max_batch = PER_TEXT_MAX_BATCH.get(getattr(self.scorer.analyze, "name", ""), 32)

    @property
    def source(self) -> str:
        return "data-only" if self.pipeline is None else "pickle"

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"]

    def score(self, texts: list[str]) -> np.ndarray:
        """P(toxic) for each raw text: `predict_proba(texts)[:, 1]` of the trained pipeline (to 1e-12)."""
        return self.score_normalised(normalize_texts(texts), texts)

    def score_normalised(self, normalised: list[str], raw: list[str]) -> np.ndarray:
        """The same scores as `score(raw)`, skipping the normalisation already done."""
        return self.score_with_oov(normalised, raw)[0]

    def score_with_oov(self, normalised: list[str], raw: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores by the faster path for this batch size, and OOV rates when they come for free."""
        if self.scorer is None:
            return self.pipeline.predict_proba(raw)[:, 1], None
        if len(normalised) <= self.per_text_max_batch:
            return self.scorer.per_text(normalised)
        return self.scorer.vectorised(normalised)

    @property
    def categories(self) -> dict[str, dict[str, Any]]:
        """{name: {"threshold", "description"}} of the categories this model scores (none without
        its data-only scorer: the pickle carries only the overall head)."""
        if self.scorer is None or not self.scorer.categories:
            return {}
        return self.manifest.get("categories", {})

    @property
    def intercepts(self) -> dict[str, Any]:
        """The logit's constant term, overall and per category: an explanation's contributions plus
        these are the logits, so a client can check one that lists every feature."""
        if self.scorer is None:
            return {}
        categories = dict(zip(self.scorer.categories, self.scorer.category_intercept.tolist(), strict=True))
        return {"score": self.scorer.intercept, "categories": categories}

    @property
    def explains(self) -> bool:
        """Whether `explain` works: the analyzer is one of ours, which can say where n-grams came from."""
        return self.scorer is not None and hasattr(self.scorer.analyze, "spans")

    def category_scores(self, normalised: list[str]) -> np.ndarray:
        """P(category), [texts, categories] in the order of `categories`."""
        return self.scorer.category_scores(normalised)

    def score_with_categories(self, normalised: list[str], raw: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`score_with_oov`, and P(category) [texts, categories]: one pass per text for small batches,
        the vectorised scores and a pass for the categories for big ones."""
        if len(normalised) <= self.per_text_max_batch:
            return self.scorer.per_text_with_categories(normalised)
        scores, oov = self.score_with_oov(normalised, raw)
        return scores, oov, self.scorer.category_scores(normalised)

    def explain(self, raw: str, top: int) -> dict[str, Any]:
        """The `top` largest contributions to `raw`'s logit, with their raw spans (`LinearScorer.explain`)."""
        return self.scorer.explain(raw, top)

    def set_per_text_max_batch(self, value: int | None) -> None:
        """Override the measured crossover (None keeps it; 0 always takes the vectorised path)."""
        if value is not None and self.scorer is not None:
            self.per_text_max_batch = value


def write_atomic(path: Path, write) -> None:
    # Write beside the target then rename, so a reader never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts must be readable by the service user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomic(directory / MANIFEST_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def data_only_entry(
    pipeline: Any, directory: Path, threshold: float, check_texts: list[str], heads: dict | None = None
) -> dict[str, Any]:
    """Build the data-only scorer (with any category heads), prove it reproduces predict_proba on
    `check_texts`, write it."""
    scorer = from_pipeline(pipeline, heads=heads)
    if not check_texts:
        raise ModelError("no texts to check the data-only scorer against")
    verified = check_reproduces(scorer, pipeline, check_texts, heads)
    files = write_scorer(scorer, directory, threshold, write_atomic)
    return {"format": format_of(scorer), "files": files, "verified": verified}


def save_artifact(
    pipeline: Any,
    directory: str | os.PathLike,
    manifest: dict[str, Any],
    check_texts: list[str] | None = None,
    heads: dict | None = None,
) -> dict[str, Any]:
    """Write the pickle and, for supported pipelines checked on `check_texts`, the data-only scorer
    (with the category `heads`, which only it carries); then the manifest, which is written last
    and only if the check passed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    write_atomic(model_path, lambda tmp: Path(tmp).write_bytes(dump(pipeline)))
    full = {
        **manifest,
        "serializer": SERIALIZER,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "libraries": library_versions(),
        "feature_fingerprint": feature_fingerprint(),
    }
    if heads:
        write_atomic(directory / HEADS_FILE, lambda tmp: Path(tmp).write_bytes(dump(heads)))
        full["category_heads"] = {"file": HEADS_FILE, "sha256": sha256_file(directory / HEADS_FILE)}
    if check_texts is not None:
        try:
            full["data_only"] = data_only_entry(pipeline, directory, float(manifest["threshold"]), check_texts, heads)
        except UnsupportedPipeline as exc:
            if heads:
                raise
            log.warning("model %s: no data-only scorer (%s); serving it will need its pickle", directory, exc)
    _write_manifest(directory, full)
    return full


def update_manifest(directory: str | os.PathLike, changes: dict[str, Any]) -> dict[str, Any]:
    """Add or replace top-level manifest fields (evaluation figures); the artifact files are untouched."""
    directory = Path(directory)
    manifest = {**read_manifest(directory), **changes}
    _write_manifest(directory, manifest)
    return manifest


def export_data_only(directory: str | os.PathLike, check_texts: list[str], on_version_mismatch: str = "error") -> dict:
    """Add a data-only scorer to an existing artifact (verified like training's); returns the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    pipeline, _ = load_pipeline(directory, manifest, on_version_mismatch)
    _check_normaliser(manifest, on_version_mismatch, directory)
    manifest["data_only"] = data_only_entry(pipeline, directory, float(manifest["threshold"]), check_texts)
    _write_manifest(directory, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no manifest at {path}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable manifest {path}: {exc}") from None


def _check_normaliser(manifest: dict[str, Any], on_mismatch: str, where: Path) -> list[str]:
    if manifest.get("feature_fingerprint") == feature_fingerprint():
        return []
    message = f"model {where}: text normaliser output differs from the one the model was trained with"
    if on_mismatch == "error":
        raise FeatureCodeMismatchError(message + " (set TOXISERVE_ON_VERSION_MISMATCH=warn to load anyway)")
    log.warning("loading despite mismatch: %s", message)
    return [message]


def load_artifact(
    directory: str | os.PathLike, on_version_mismatch: str = "error", allow_pickle: bool = True
) -> LoadedModel:
    """The data-only scorer when the manifest lists one (the pickle is then never opened); otherwise
    the verified pickle, if `allow_pickle`."""
    if on_version_mismatch not in VERSION_POLICIES:
        raise ValueError(f"on_version_mismatch must be one of {VERSION_POLICIES}")
    directory = Path(directory)
    manifest = read_manifest(directory)
    warnings = _check_normaliser(manifest, on_version_mismatch, directory)
    model = {"name": manifest["name"], "version": manifest["version"], "manifest": manifest, "path": directory}
    data_only = manifest.get("data_only")
    if data_only:
        scorer = read_scorer(directory, data_only.get("files", {}), float(manifest["threshold"]))
        return LoadedModel(**model, scorer=scorer, warnings=warnings)
    if not allow_pickle:
        raise PickleRefusedError(
            f"model {directory} has no data-only scorer and pickles are not allowed (TOXISERVE_ALLOW_PICKLE=false); "
            f"add one with `batchjob export --name {manifest['name']} --version {manifest['version']}`"
        )
    log.warning(
        "model %s/%s has no data-only scorer: loading its pickle (run `batchjob export` to add one)",
        manifest["name"],
        manifest["version"],
    )
    pipeline, pickle_warnings = load_pipeline(directory, manifest, on_version_mismatch)
    try:
        scorer = from_pipeline(pipeline, portable=False)
    except UnsupportedPipeline as exc:
        log.warning("model %s: scoring uses predict_proba (%s)", directory, exc)
        scorer = None
    return LoadedModel(**model, scorer=scorer, pipeline=pipeline, warnings=warnings + pickle_warnings)
