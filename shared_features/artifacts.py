"""Model artifacts: `<root>/<name>/<version>/{model.joblib, manifest.json}`, verified before unpickling."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import platform
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from .errors import ChecksumMismatchError, FeatureCodeMismatchError, LibraryVersionError, ModelError
from .scorer import CompiledScorer, compile_pipeline
from .text import feature_fingerprint, normalize_texts

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
VERSION_POLICIES = ("error", "warn")
# model.joblib holds a zlib-compressed pickle (protocol 5): `joblib.load` reads it as it is, and the
# loader unpickles it with the C unpickler. joblib's own format needs joblib's unpickler, which is
# pure Python: 87 ms of a ~1 s cold start for our two vocabulary-heavy pipelines, against 9 ms.
# Manifests without "serializer" (older artifacts) are joblib's format and load with joblib.
SERIALIZER = "pickle-zlib"


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """The versions a pickled pipeline depends on; recorded at save, compared at load."""
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


@dataclass
class LoadedModel:
    """A verified, unpickled pipeline and the manifest it came with."""

    name: str
    version: str
    pipeline: Any
    manifest: dict[str, Any]
    path: Path
    warnings: list[str] = field(default_factory=list)
    scorer: CompiledScorer | None = None
    # Largest batch the compiled scorer takes; bigger ones go to vectorised predict_proba. Measured
    # crossover (bench/scorer_bench.py): word n-grams ~256-1000 texts, char n-grams ~32-64.
    compiled_max_batch: int = 0

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"]

    def score(self, texts: list[str]) -> np.ndarray:
        """P(toxic) for each text: exactly `pipeline.predict_proba(texts)[:, 1]`."""
        return self.pipeline.predict_proba(texts)[:, 1]

    @property
    def normalises_first(self) -> bool:
        """True when step 0 is our normaliser, so the rest of the pipeline can take normalised text."""
        steps = getattr(self.pipeline, "steps", None)
        return bool(steps) and getattr(steps[0][1], "func", None) is normalize_texts

    def score_normalised(self, normalised: list[str], raw: list[str]) -> np.ndarray:
        """The same scores as `score(raw)` (to 1e-12), skipping the normalisation already done."""
        return self.score_with_oov(normalised, raw)[0]

    def score_with_oov(self, normalised: list[str], raw: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores by the faster path for this batch size, and OOV rates when they came for free.

        Small batches: the compiled scorer (per-call overhead ~0). Large ones: `pipeline[1:]`, the
        pipeline's own remaining steps on the normalised text (identical arithmetic, one pass fewer).
        """
        if self.scorer is not None and len(normalised) <= self.compiled_max_batch:
            return self.scorer.score(normalised)
        if self.normalises_first:
            return self.pipeline[1:].predict_proba(normalised)[:, 1], None
        return self.score(raw), None

    def compile(self, max_batch: int | None = None) -> None:
        """Build the compiled scorer (once, at load: in the gunicorn master, before fork)."""
        self.scorer = compile_pipeline(self.pipeline, f"{self.name}/{self.version}") if max_batch != 0 else None
        if max_batch is None:
            analyzer = getattr(self.pipeline.steps[1][1], "analyzer", "word") if self.scorer else "word"
            max_batch = 256 if analyzer == "word" else 32
        self.compiled_max_batch = max_batch if self.scorer else 0


def _write_atomic(path: Path, write) -> None:
    # Write beside the target then rename, so a reader never sees a half-written artifact.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts must be readable by the service user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(pipeline: Any, directory: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Dump the fitted pipeline, then write a manifest that records its sha256 and the libraries."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    _write_atomic(model_path, lambda tmp: Path(tmp).write_bytes(zlib.compress(pickle.dumps(pipeline, protocol=5), 3)))
    full = {
        **manifest,
        "serializer": SERIALIZER,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "libraries": library_versions(),
        "feature_fingerprint": feature_fingerprint(),
    }

    def write_manifest(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    _write_atomic(directory / MANIFEST_FILE, write_manifest)
    return full


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no manifest at {path}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable manifest {path}: {exc}") from None


def _check_environment(manifest: dict[str, Any], on_mismatch: str, where: Path) -> list[str]:
    """Compare the libraries and normaliser the artifact was made with against the running ones."""
    problems = []
    recorded = manifest.get("libraries", {})
    for lib in ("scikit-learn", "numpy", "joblib"):
        running = library_versions()[lib]
        if recorded.get(lib) != running:
            problems.append(f"{lib} {recorded.get(lib)} at training, {running} running")
    fingerprint_differs = manifest.get("feature_fingerprint") != feature_fingerprint()
    if fingerprint_differs:
        problems.append("text normaliser output differs from the one the model was trained with")
    if not problems:
        return []
    message = f"model {where}: " + "; ".join(problems)
    if on_mismatch == "error":
        error = FeatureCodeMismatchError if fingerprint_differs else LibraryVersionError
        raise error(message + " (set TOXISERVE_ON_VERSION_MISMATCH=warn to load anyway)")
    log.warning("loading despite mismatch: %s", message)
    return [message]


def _unpickle(data: bytes, serializer: str | None, where: Path) -> Any:
    if serializer == SERIALIZER:
        return pickle.loads(zlib.decompress(data))
    if serializer is None:
        return joblib.load(io.BytesIO(data))
    raise ModelError(f"{where}: unknown serializer {serializer!r} in the manifest")


def load_artifact(directory: str | os.PathLike, on_version_mismatch: str = "error") -> LoadedModel:
    """Verify model.joblib against the manifest's sha256, then (and only then) unpickle it."""
    if on_version_mismatch not in VERSION_POLICIES:
        raise ValueError(f"on_version_mismatch must be one of {VERSION_POLICIES}")
    directory = Path(directory)
    manifest = read_manifest(directory)
    model_path = directory / MODEL_FILE
    try:
        data = model_path.read_bytes()  # read once: the bytes verified are the bytes unpickled
    except OSError as exc:
        raise ModelError(f"cannot read {model_path}: {exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest.get("sha256"):
        raise ChecksumMismatchError(
            f"checksum mismatch for {model_path}: manifest says {manifest.get('sha256')}, file is {actual}; "
            "refusing to load"
        )
    warnings = _check_environment(manifest, on_version_mismatch, directory)
    pipeline = _unpickle(data, manifest.get("serializer"), model_path)
    model = LoadedModel(
        name=manifest["name"],
        version=manifest["version"],
        pipeline=pipeline,
        manifest=manifest,
        path=directory,
        warnings=warnings,
    )
    model.compile()
    return model
