"""The one error hierarchy: every failure the project reports carries a status and an error_code.

Transports map it: HTTP to the JSON error body, gRPC to a status code, the CLI to an exit code.
"""

from __future__ import annotations

from typing import Any


class ToxiserveError(Exception):
    """Root of every error we report on purpose; anything else is an INTERNAL_ERROR."""

    status: int = 500
    error_code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UnprocessableError(ToxiserveError):
    """Well-formed input whose values cannot be accepted (blank text, too long, batch too big)."""

    status = 422
    error_code = "UNPROCESSABLE"


class ModelError(ToxiserveError):
    """A model artifact cannot be found, verified or loaded."""

    status = 503
    error_code = "NOT_READY"


class ModelNotFoundError(ModelError):
    status = 404
    error_code = "NOT_FOUND"


class ChecksumMismatchError(ModelError):
    """model.joblib does not match the sha256 its manifest records: never unpickle it."""


class LibraryVersionError(ModelError):
    """The running libraries differ from the ones the artifact was trained with."""


class FeatureCodeMismatchError(ModelError):
    """The text normaliser behaves differently from the one the artifact was trained with."""


class DatasetError(ToxiserveError):
    """A training or scoring input cannot be read or lacks the expected columns."""

    status = 400
    error_code = "INVALID_DATASET"
