"""Reading labeled training data (CSV or Parquet, configurable column names)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import sha256_file
from .errors import DatasetError
from .layout import DATA_FORMATS

FORMATS = DATA_FORMATS


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


def _read_columns(path, columns: list[str], fmt: str | None) -> pd.DataFrame:
    fmt = detect_format(path, fmt)
    try:
        if fmt == "csv":
            return pd.read_csv(path, usecols=columns, keep_default_na=False)
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def _strings(frame: pd.DataFrame, column: str, path) -> list[str]:
    texts = frame[column]
    if texts.isna().any() or not all(isinstance(t, str) for t in texts):
        raise DatasetError(f"{path}: column {column!r} must hold only strings")
    return texts.tolist()


def read_texts(path: str | os.PathLike, text_column: str = "text", fmt: str | None = None) -> list[str]:
    return _strings(_read_columns(path, [text_column], fmt), text_column, path)


def _map_labels(column: pd.Series, positive: tuple[str, ...], path, name: str) -> pd.Series:
    """1 where the value is one of `positive` (compared as text: `0` matches 0 and "0"), else 0."""
    if column.isna().any() or (column.astype(str).str.strip() == "").any():
        raise DatasetError(f"{path}: column {name!r} has empty labels")
    as_text = column.astype(str).str.strip()
    if not as_text.isin(positive).any():
        raise DatasetError(f"{path}: no value of column {name!r} is one of --positive-labels {','.join(positive)}")
    return as_text.isin(positive).astype(np.int64)


def read_labeled(
    path: str | os.PathLike,
    text_column: str = "text",
    label_column: str = "label",
    fmt: str | None = None,
    positive_labels: tuple[str, ...] | None = None,
) -> LabeledData:
    """Load texts and 0/1 labels; refuse missing columns, nulls or labels other than 0 and 1.

    `positive_labels` maps a label column of any values: those listed become 1 (toxic), the rest 0.
    The upstream Davidson file is `tweet` / `class` with classes 0 hate speech, 1 offensive, 2 neither.
    """
    frame = _read_columns(path, [text_column, label_column], fmt)
    texts = _strings(frame, text_column, path)
    if positive_labels:
        labels = _map_labels(frame[label_column], positive_labels, path, label_column)
    else:
        labels = pd.to_numeric(frame[label_column], errors="coerce")
    if labels.isna().any() or not set(labels.unique()) <= {0, 1}:
        raise DatasetError(f"{path}: column {label_column!r} must hold only 0 and 1 (or pass --positive-labels)")
    if labels.nunique() < 2:
        raise DatasetError(f"{path}: both classes are needed to train")
    return LabeledData(
        texts=texts,
        labels=labels.to_numpy(dtype=np.int64),
        source=os.path.basename(os.fspath(path)),
        sha256=sha256_file(path),
    )
