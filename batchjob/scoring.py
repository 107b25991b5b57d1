"""`batchjob score`: stream an input through the shared pipeline into an output, losing no row."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from shared_features import LoadedModel, ModelRegistry
from shared_features.batch import OUTPUT_COLUMNS, assemble, check_columns, score_values
from shared_features.text import MAX_TEXT_CHARS

from .io import AtomicTableWriter, detect_format, open_input
from .progress import Progress


class JobInterrupted(Exception):
    """SIGTERM/SIGINT: stop, remove partial files, exit 1."""


@dataclass
class ScoreJob:
    input: str
    output: str
    model_dir: Path
    model: str = "toxicity"
    version: str = "v1"
    text_column: str = "text"
    input_format: str | None = None
    output_format: str | None = None
    chunk_size: int = 50_000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    rejects: str | None = None
    keep_text: bool = False
    max_chars: int = MAX_TEXT_CHARS
    on_version_mismatch: str = "error"

    def rejects_path(self) -> str:
        if self.rejects:
            return self.rejects
        out = Path(self.output)
        return str(out.with_name(f"{out.stem}.rejects{out.suffix}"))


@dataclass
class Counts:
    rows_in: int = 0
    rows_scored: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def rows_rejected(self) -> int:
        return sum(self.reasons.values())


def load_model(job: ScoreJob) -> LoadedModel:
    return ModelRegistry(job.model_dir, job.on_version_mismatch).load(job.model, job.version)


# --- worker processes: each loads (and verifies) the model once, then scores texts it is sent ---
_worker_model: LoadedModel | None = None


def _init_worker(model_dir: str, name: str, version: str, policy: str) -> None:
    global _worker_model
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _worker_model = ModelRegistry(model_dir, policy).load(name, version)


def _score_in_worker(texts: pa.Array, max_chars: int):
    return score_values(_worker_model, texts.to_pylist(), max_chars)


def _raise_interrupted(signum, frame):
    raise JobInterrupted(f"interrupted by signal {signum}")


def run_local(job: ScoreJob, progress_interval: float = 10.0) -> dict:
    """Score chunks in `job.workers` processes (or in this one), writing them in input order."""
    started = time.perf_counter()
    model = load_model(job)
    source = open_input(job.input, job.input_format, job.chunk_size)
    out_fmt = detect_format(job.output, job.output_format)
    output = AtomicTableWriter(job.output, out_fmt)
    rejects = AtomicTableWriter(job.rejects_path(), out_fmt)
    counts = Counts()
    progress = Progress(source.total_rows, interval=progress_interval)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    pool = None
    schema = None
    try:
        if job.workers > 1:
            pool = ProcessPoolExecutor(
                job.workers,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of a process running Arrow threads
                initializer=_init_worker,
                initargs=(str(job.model_dir), job.model, job.version, job.on_version_mismatch),
            )
        pending: deque = deque()

        def finish_oldest() -> None:
            table, first_row, outcome = pending.popleft()
            scores, reasons = outcome.result() if pool else outcome
            chunk = assemble(
                table, job.text_column, first_row, scores, reasons, model.version, model.threshold, job.keep_text
            )
            output.write(chunk.scored)
            rejects.write(chunk.rejects)
            counts.rows_scored += chunk.scored.num_rows
            counts.reasons.update(r for r in reasons if r is not None)
            progress.advance(table.num_rows)

        for table in source.chunks():
            if schema is None:
                schema = table.schema
                check_columns(schema, job.text_column, job.keep_text)
            texts = table.column(job.text_column).combine_chunks()
            if pool:
                outcome = pool.submit(_score_in_worker, texts, job.max_chars)
            else:
                outcome = score_values(model, texts.to_pylist(), job.max_chars)
            pending.append((table, counts.rows_in, outcome))
            counts.rows_in += table.num_rows
            # A bounded window of chunks in flight: memory follows the chunk size, not the file size.
            while len(pending) > 2 * max(job.workers, 1) or (not pool and pending):
                finish_oldest()
        while pending:
            finish_oldest()
        empty_scored, empty_rejects = _empty_schemas(schema, job)
        output.commit(empty_scored)
        rejects.commit(empty_rejects)
    except BaseException:
        output.abort()
        rejects.abort()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    progress.finish()
    return summary(job, model, counts, time.perf_counter() - started, "local")


def _empty_schemas(schema: pa.Schema | None, job: ScoreJob) -> tuple[pa.Schema, pa.Schema]:
    """Schemas for outputs of an input with no rows at all, so the files are still valid and typed."""
    base = [f for f in (schema or pa.schema([])) if job.keep_text or f.name != job.text_column]
    scored = pa.schema([*base, ("score", pa.float64()), ("label", pa.string()), ("model_version", pa.string())])
    rejects = pa.schema([("row_number", pa.int64()), ("reason", pa.string()), *base])
    assert [f.name for f in scored][-3:] == list(OUTPUT_COLUMNS)
    return scored, rejects


def summary(job: ScoreJob, model: LoadedModel, counts: Counts, seconds: float, engine: str) -> dict:
    return {
        "rows_in": counts.rows_in,
        "rows_scored": counts.rows_scored,
        "rows_rejected": counts.rows_rejected,
        "reject_rate": round(counts.rows_rejected / counts.rows_in, 6) if counts.rows_in else 0.0,
        "reject_reasons": dict(sorted(counts.reasons.items())),
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "input": job.input,
        "output": job.output,
        "rejects": job.rejects_path(),
        "engine": engine,
        "workers": job.workers,
        "chunk_size": job.chunk_size,
        "seconds": round(seconds, 3),
        "rows_per_second": round(counts.rows_in / seconds, 1) if seconds > 0 else None,
    }


def write_summary(summary_dict: dict, path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    tmp.write_text(json.dumps(summary_dict, indent=2) + "\n")
    os.replace(tmp, target)
