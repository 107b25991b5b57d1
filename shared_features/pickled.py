"""The pickle side of an artifact: `model.joblib`, the fitted scikit-learn pipeline.

Training writes it, `batchjob export` reads it, and a model without a data-only scorer falls back
to it. A pickle runs code when it loads, so it is read only after its sha256 matched the manifest,
and serving never opens it when a data-only scorer exists. joblib and scikit-learn are imported
here, on first use, so processes that never touch a pickle never import them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import platform
import zlib
from pathlib import Path
from typing import Any

from .errors import ChecksumMismatchError, LibraryVersionError, ModelError

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
HEADS_FILE = "category_heads.joblib"  # {category: LogisticRegression}: the reference its data-only heads reproduce
# model.joblib holds a zlib-compressed pickle (protocol 5): `joblib.load` reads it as it is, and the
# loader unpickles it with the C unpickler, ~10x faster than joblib's pure-Python one. Manifests
# without "serializer" (older artifacts) are joblib's own format and load with joblib.
SERIALIZER = "pickle-zlib"


def library_versions() -> dict[str, str]:
    """The versions a pickled pipeline depends on; recorded at save, compared at load."""
    import joblib
    import numpy as np
    import sklearn

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def dump(pipeline: Any) -> bytes:
    return zlib.compress(pickle.dumps(pipeline, protocol=5), 3)


def check_libraries(manifest: dict[str, Any], on_mismatch: str, where: Path) -> list[str]:
    running = library_versions()
    recorded = manifest.get("libraries", {})
    problems = [
        f"{lib} {recorded.get(lib)} at training, {running[lib]} running"
        for lib in ("scikit-learn", "numpy", "joblib")
        if recorded.get(lib) != running[lib]
    ]
    if not problems:
        return []
    message = f"model {where}: " + "; ".join(problems)
    if on_mismatch == "error":
        raise LibraryVersionError(message + " (set TOXISERVE_ON_VERSION_MISMATCH=warn to load anyway)")
    log.warning("loading despite mismatch: %s", message)
    return [message]


def load_category_heads(directory: Path, manifest: dict[str, Any], on_mismatch: str = "error") -> dict[str, Any]:
    """The fitted category heads (training tools and tests only: serving reads the data-only scorer)."""
    entry = manifest.get("category_heads") or {}
    return load_pipeline(directory, {**manifest, "sha256": entry.get("sha256")}, on_mismatch, HEADS_FILE)[0]


def load_pipeline(
    directory: Path, manifest: dict[str, Any], on_mismatch: str, file_name: str = MODEL_FILE
) -> tuple[Any, list[str]]:
    """Verify model.joblib against the manifest's sha256 and the libraries, then (only then) unpickle."""
    model_path = directory / file_name
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
    warnings = check_libraries(manifest, on_mismatch, directory)
    serializer = manifest.get("serializer")
    if serializer not in (SERIALIZER, None):
        raise ModelError(f"{model_path}: unknown serializer {serializer!r} in the manifest")
    try:
        if serializer == SERIALIZER:
            return pickle.loads(zlib.decompress(data)), warnings
        import joblib

        return joblib.load(io.BytesIO(data)), warnings
    except Exception as exc:  # a class that no longer imports, a truncated stream: unloadable, not a crash
        raise ModelError(f"cannot unpickle {model_path}: {type(exc).__name__}: {exc}") from None
