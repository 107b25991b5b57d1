"""Reading labeled training data (CSV or Parquet, configurable column names)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import sha256_file
from .errors import DatasetError

FORMATS = ("csv", "parquet")


def detect_format(path: str | os.PathLike, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("parquet", "pq"):
        return "parquet"
    if suffix == "csv":
        return "csv"
    raise DatasetError(f"cannot tell the format of {path}: use a .csv or .parquet file or pass the format")


@dataclass
class LabeledData:
    texts: list[str]
    labels: np.ndarray
    source: str
    sha256: str

    @property
    def rows(self) -> int:
        return len(self.texts)


def read_labeled(
    path: str | os.PathLike, text_column: str = "text", label_column: str = "label", fmt: str | None = None
) -> LabeledData:
    """Load texts and 0/1 labels; refuse missing columns, nulls or labels other than 0 and 1."""
    fmt = detect_format(path, fmt)
    try:
        if fmt == "csv":
            frame = pd.read_csv(path, usecols=[text_column, label_column], keep_default_na=False)
        else:
            frame = pd.read_parquet(path, columns=[text_column, label_column])
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    texts = frame[text_column]
    if texts.isna().any() or not all(isinstance(t, str) for t in texts):
        raise DatasetError(f"{path}: column {text_column!r} must hold only strings")
    labels = pd.to_numeric(frame[label_column], errors="coerce")
    if labels.isna().any() or not set(labels.unique()) <= {0, 1}:
        raise DatasetError(f"{path}: column {label_column!r} must hold only 0 and 1")
    if labels.nunique() < 2:
        raise DatasetError(f"{path}: both classes are needed to train")
    return LabeledData(
        texts=texts.tolist(),
        labels=labels.to_numpy(dtype=np.int64),
        source=os.path.basename(os.fspath(path)),
        sha256=sha256_file(path),
    )
