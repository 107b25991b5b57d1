"""Scoring a chunk of rows for batch jobs (local or Dask): the same screening and scores as the service.

A model with categories adds a `score_<category>` column each; `explain=K` adds `explanation`, the
top K contributions of each row as JSON (the API's `explanation`, spans into the row's text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .artifacts import LoadedModel
from .errors import DatasetError
from .text import MAX_TEXT_CHARS, screen_text

OUTPUT_COLUMNS = ("score", "label", "model_version")
REJECT_COLUMNS = ("row_number", "reason")
EXPLANATION_COLUMN = "explanation"


def detail_columns(model: LoadedModel, explain: int = 0) -> list[tuple[str, pa.DataType]]:
    """The columns a model's categories and `explain` add after the output columns (before any prefix)."""
    columns = [(f"score_{name}", pa.float64()) for name in model.categories]
    return columns + ([(EXPLANATION_COLUMN, pa.string())] if explain else [])


def added_columns(prefix: str = "") -> tuple[tuple[str, str, str], tuple[str, str]]:
    """The names a batch job adds: (score, label, model_version) to the output and (row_number,
    reason) to the rejects, each with `prefix` (for inputs that already have such columns)."""
    score, label, version = (prefix + name for name in OUTPUT_COLUMNS)
    row_number, reason = (prefix + name for name in REJECT_COLUMNS)
    return (score, label, version), (row_number, reason)


@dataclass
class ScoredChunk:
    scored: pa.Table  # input columns (text dropped unless kept) + score, label, model_version
    rejects: pa.Table  # row_number, reason + the same input columns


@dataclass
class Scored:
    """What scoring gives for the acceptable values of a chunk, in order."""

    scores: np.ndarray
    details: dict[str, list] = field(default_factory=dict)  # detail column -> one value per scored row


def score_values(
    model: LoadedModel, values: list, max_chars: int = MAX_TEXT_CHARS, explain: int = 0
) -> tuple[Scored, list]:
    """Scores (and detail columns) of the acceptable values, in order, and a reason per value (None = scored).

    The expensive step, and the only one a worker process needs: values in, numbers out.
    """
    normalised, raw, reasons = [], [], []
    for value in values:
        clean, reason = screen_text(value, max_chars)
        reasons.append(reason)
        if reason is None:
            normalised.append(clean)
            raw.append(value)
    details: dict[str, list] = {}
    if not normalised:
        scores, per_category = np.empty(0, dtype=np.float64), np.empty((0, len(model.categories)))
    elif model.categories:
        scores, _, per_category = model.score_with_categories(normalised, raw)
    else:
        scores = model.score_normalised(normalised, raw)
    if model.categories:
        for index, name in enumerate(model.categories):
            details[f"score_{name}"] = per_category[:, index].tolist()
    if explain:
        details[EXPLANATION_COLUMN] = [
            json.dumps(model.explain(text, explain)["explanation"], ensure_ascii=False, separators=(",", ":"))
            for text in raw
        ]
    return Scored(scores, details), reasons


def check_columns(
    schema: pa.Schema, text_column: str, keep_text: bool, prefix: str = "", details: list[str] = ()
) -> None:
    if text_column not in schema.names:
        raise DatasetError(f"input has no column {text_column!r} (columns: {', '.join(schema.names)})")
    kept = set(schema.names) - ({text_column} if not keep_text else set())
    outputs, rejects = added_columns(prefix)
    clash = kept & set(outputs + rejects + tuple(prefix + name for name in details))
    if clash:
        raise DatasetError(
            f"input already has column(s) {sorted(clash)} that the output adds; name the added columns "
            f"differently with --output-prefix (e.g. --output-prefix {prefix or ''}pred_)"
        )


def assemble(
    table: pa.Table,
    text_column: str,
    first_row: int,
    scored_values: Scored,
    reasons: list,
    model_version: str,
    threshold: float,
    keep_text: bool = False,
    prefix: str = "",
) -> ScoredChunk:
    """Split `table` into scored rows (with score/label/model_version and any detail columns) and
    rejects (with row numbers)."""
    scores = scored_values.scores
    (score, label, version), (row_number, reason) = added_columns(prefix)
    accepted = pa.array([reason is None for reason in reasons], pa.bool_())
    base = table if keep_text else table.drop_columns([text_column])
    scored = base.filter(accepted)
    labels = np.where(scores >= threshold, "toxic", "clean")
    scored = (
        scored.append_column(score, pa.array(scores, pa.float64()))
        .append_column(label, pa.array(labels, pa.string()))
        .append_column(version, pa.array([model_version] * len(scores), pa.string()))
    )
    for name, values in scored_values.details.items():
        kind = pa.string() if name == EXPLANATION_COLUMN else pa.float64()
        scored = scored.append_column(prefix + name, pa.array(values, kind))
    rejected = pc.invert(accepted)
    row_numbers = pa.array(np.arange(first_row, first_row + len(reasons), dtype=np.int64)).filter(rejected)
    rejects = base.filter(rejected)
    rejects = rejects.add_column(0, reason, pa.array([r for r in reasons if r is not None], pa.string()))
    rejects = rejects.add_column(0, row_number, row_numbers)
    return ScoredChunk(scored=scored, rejects=rejects)


def score_chunk(
    model: LoadedModel,
    table: pa.Table,
    text_column: str,
    first_row: int,
    keep_text: bool = False,
    max_chars: int = MAX_TEXT_CHARS,
    prefix: str = "",
    explain: int = 0,
) -> ScoredChunk:
    """Both steps in this process."""
    scored, reasons = score_values(model, table.column(text_column).to_pylist(), max_chars, explain)
    return assemble(table, text_column, first_row, scored, reasons, model.version, model.threshold, keep_text, prefix)
