"""The one feature pipeline, model artifacts and registry shared by training, the service and batch jobs.

Names are imported on first use (PEP 562): `import shared_features.text` costs no numpy, the
serving side (artifacts, registry, scorer) costs numpy and nothing heavier, and only the training
side (`PRESETS`, `build_pipeline`, `resolve_params`, `shared_features.training`) imports
scikit-learn. Serving never needs it.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "LoadedModel": "artifacts",
    "load_artifact": "artifacts",
    "save_artifact": "artifacts",
    "sha256_file": "artifacts",
    "ChecksumMismatchError": "errors",
    "DatasetError": "errors",
    "FeatureCodeMismatchError": "errors",
    "LibraryVersionError": "errors",
    "ModelError": "errors",
    "ModelNotFoundError": "errors",
    "ToxiserveError": "errors",
    "UnprocessableError": "errors",
    "PRESETS": "presets",
    "build_pipeline": "pipeline",
    "resolve_params": "presets",
    "ModelRegistry": "registry",
    "MAX_TEXT_CHARS": "text",
    "normalize_text": "text",
    "normalize_texts": "text",
    "rejection_reason": "text",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


def __dir__() -> list[str]:
    return sorted(_HOMES)


__all__ = sorted(_HOMES)
