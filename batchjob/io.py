"""Streaming readers (CSV, Parquet files/directories/globs) and writers that only publish complete files."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared_features.errors import DatasetError
from shared_features.layout import DATA_FORMATS

FORMATS = DATA_FORMATS


def detect_format(path: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    lowered = path.lower().rstrip("/")
    if lowered.endswith((".parquet", ".pq")) or os.path.isdir(path) or any(ch in path for ch in "*?["):
        return "parquet"
    if lowered.endswith(".csv"):
        return "csv"
    raise DatasetError(f"cannot tell the format of {path}: use .csv or .parquet, or pass --format")


def _natural_key(path: str) -> list:
    # part.10.parquet after part.9.parquet, as Dask and Spark number them
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def parquet_files(source: str) -> list[str]:
    """A file, a directory (every *.parquet below it) or a glob; in a stable, natural order."""
    if os.path.isdir(source):
        files = [str(p) for p in Path(source).rglob("*.parquet")]
    elif any(ch in source for ch in "*?["):
        files = glob.glob(source, recursive=True)
    else:
        files = [source]
    files = sorted(files, key=_natural_key)
    if not files:
        raise DatasetError(f"no Parquet files found at {source}")
    return files


@dataclass
class Input:
    """An input opened for streaming: chunks of at most `chunk_size` rows, in file order."""

    path: str
    fmt: str
    chunk_size: int
    total_rows: int | None  # known up front for Parquet (metadata), not for CSV

    def chunks(self) -> Iterator[pa.Table]:
        try:
            if self.fmt == "parquet":
                for file in parquet_files(self.path):
                    # Memory is bounded by the chunk (and by one row group, which pyarrow reads whole).
                    for batch in pq.ParquetFile(file).iter_batches(batch_size=self.chunk_size):
                        yield pa.Table.from_batches([batch])
            else:
                # All columns as strings: CSV has no types, and per-chunk inference would drift.
                # Only an empty field is null (a text "NA" is a text).
                reader = pd.read_csv(
                    self.path, chunksize=self.chunk_size, dtype=str, keep_default_na=False, na_values=[""]
                )
                with reader:
                    for frame in reader:
                        yield pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DatasetError(f"cannot read {self.path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def open_input(path: str, fmt: str | None, chunk_size: int) -> Input:
    fmt = detect_format(path, fmt)
    total = None
    if fmt == "parquet":
        try:
            total = sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"cannot read {path}: {exc}".splitlines()[0]) from None
    elif not os.path.isfile(path):
        raise DatasetError(f"no such file: {path}")
    return Input(path=path, fmt=fmt, chunk_size=chunk_size, total_rows=total)


# Spreadsheets run a cell that starts with = + - @ (or tab, CR) as a formula: `=cmd|' /C calc'!A0`
# in a tweet becomes code on the analyst's machine. OWASP's remedy: prefix such cells with a quote.
# A signed number ("-3", "+1.5") is left alone, so numeric columns read as strings stay numbers.
_FORMULA_START = r"^[=@\t\r+-]"
_SIGNED_NUMBER = r"^[+-][0-9.]*$"


def escape_formulas(table: pa.Table) -> pa.Table:
    """Every string cell that a spreadsheet would run as a formula, prefixed with `'`."""
    for index, column in enumerate(table.columns):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        risky = pc.and_(
            pc.match_substring_regex(column, _FORMULA_START),
            pc.invert(pc.match_substring_regex(column, _SIGNED_NUMBER)),
        )
        risky = pc.fill_null(risky, False)
        if pc.any(risky).as_py():
            quote, empty = pa.scalar("'", column.type), pa.scalar("", column.type)
            escaped = pc.if_else(risky, pc.binary_join_element_wise(quote, column, empty), column)
            table = table.set_column(index, table.field(index), escaped)
    return table


class AtomicTableWriter:
    """Writes tables to a temporary file beside `path`; only `commit()` renames it into place.

    A failed or interrupted job therefore never leaves a partial file at `path`. CSV output escapes
    formula-like cells (`escape_formulas`) unless told not to.
    """

    def __init__(self, path: str, fmt: str, escape_csv_formulas: bool = True) -> None:
        self.path, self.fmt = Path(path), fmt
        self.escape = escape_csv_formulas and fmt == "csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial")
        os.close(fd)
        self.tmp = Path(tmp)
        self._writer = None
        self._schema: pa.Schema | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.escape:
            table = escape_formulas(table)
        if self._writer is None:
            self._schema = table.schema
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(self.tmp, self._schema, compression="zstd")
            else:
                self._writer = pacsv.CSVWriter(self.tmp, self._schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self, empty_schema: pa.Schema | None = None) -> None:
        if self._writer is None:  # no chunk at all: still publish a valid, empty file
            self.write(pa.Table.from_batches([], schema=empty_schema or pa.schema([])))
        self._writer.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self.tmp.unlink(missing_ok=True)
