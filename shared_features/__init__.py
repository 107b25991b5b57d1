"""The one feature pipeline, model artifacts and registry shared by training, the service and batch jobs."""

from .artifacts import LoadedModel, load_artifact, save_artifact, sha256_file
from .errors import (
    ChecksumMismatchError,
    DatasetError,
    FeatureCodeMismatchError,
    LibraryVersionError,
    ModelError,
    ModelNotFoundError,
    ToxiserveError,
    UnprocessableError,
)
from .pipeline import PRESETS, build_pipeline, resolve_params
from .registry import ModelRegistry
from .text import MAX_TEXT_CHARS, normalize_text, normalize_texts, rejection_reason

__all__ = [
    "ChecksumMismatchError",
    "DatasetError",
    "FeatureCodeMismatchError",
    "LibraryVersionError",
    "LoadedModel",
    "MAX_TEXT_CHARS",
    "ModelError",
    "ModelNotFoundError",
    "ModelRegistry",
    "PRESETS",
    "ToxiserveError",
    "UnprocessableError",
    "build_pipeline",
    "load_artifact",
    "normalize_text",
    "normalize_texts",
    "rejection_reason",
    "resolve_params",
    "save_artifact",
    "sha256_file",
]
