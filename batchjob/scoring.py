"""`batchjob score`: stream an input through the shared pipeline into an output, losing no row."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from shared_features import LoadedModel, ModelRegistry
from shared_features.batch import added_columns, assemble, check_columns, detail_columns, score_values
from shared_features.errors import ToxiserveError
from shared_features.text import MAX_TEXT_CHARS

from .io import AtomicTableWriter, detect_format, open_input
from .progress import Progress


class JobInterrupted(ToxiserveError):
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
    chunk_size: int = 20_000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    rejects: str | None = None
    keep_text: bool = False
    output_prefix: str = ""  # before the added column names, for inputs that already have them
    escape_formulas: bool = True  # CSV output: prefix cells a spreadsheet would run as formulas with '
    max_chars: int = MAX_TEXT_CHARS
    on_version_mismatch: str = "error"
    explain: int = 0  # top contributions per row in an `explanation` column (0: none)

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


# --- helper processes: they hold the verified model and turn lists of texts into scores ---
_worker_model: LoadedModel | None = None


def _init_forked_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _init_spawned_worker(model_dir: str, name: str, version: str, policy: str) -> None:
    global _worker_model
    _init_forked_worker()
    _worker_model = ModelRegistry(model_dir, policy).load(name, version)


def _score_in_worker(texts: list, max_chars: int, explain: int):
    return score_values(_worker_model, texts, max_chars, explain)


def _start_helpers(count: int, model: LoadedModel, job: ScoreJob) -> ProcessPoolExecutor:
    """Fork where we can: before any Arrow I/O has started threads, so the helpers inherit the
    imports and the already verified model for free (spawning costs ~1.5 s of imports each).
    Helpers are sent plain Python lists and never call into Arrow.
    """
    global _worker_model
    if "fork" in multiprocessing.get_all_start_methods():
        _worker_model = model
        pool = ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("fork"), initializer=_init_forked_worker
        )
    else:
        pool = ProcessPoolExecutor(
            count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_spawned_worker,
            initargs=(str(job.model_dir), job.model, job.version, job.on_version_mismatch),
        )
    pool.submit(int).result()  # start the processes now, while this process has no other threads
    return pool


def _raise_interrupted(signum, frame):
    raise JobInterrupted(f"interrupted by signal {signum}")


def run_local(job: ScoreJob, progress_interval: float = 10.0) -> dict:
    """Score chunks on `job.workers` cores, writing them in input order.

    This process is one of the scorers: it reads, writes *and* scores a chunk whenever the
    `workers - 1` helper processes already have enough queued, so the I/O needs no core of its own.
    """
    started = time.perf_counter()
    model = load_model(job)
    helpers = job.workers - 1
    pool = _start_helpers(helpers, model, job) if helpers else None
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        counts = _stream(job, model, pool, helpers, progress_interval)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return summary(job, model, counts, time.perf_counter() - started, "local")


def _stream(job: ScoreJob, model: LoadedModel, pool, helpers: int, progress_interval: float) -> Counts:
    source = open_input(job.input, job.input_format, job.chunk_size)
    out_fmt = detect_format(job.output, job.output_format)
    output = AtomicTableWriter(job.output, out_fmt, job.escape_formulas)
    rejects = AtomicTableWriter(job.rejects_path(), out_fmt, job.escape_formulas)
    counts = Counts()
    progress = Progress(source.total_rows, interval=progress_interval)
    pending: deque = deque()  # (table, first row number, scores or a Future of them), in input order

    def finish_oldest() -> None:
        table, first_row, outcome = pending.popleft()
        scored, reasons = outcome.result() if isinstance(outcome, Future) else outcome
        chunk = assemble(
            table,
            job.text_column,
            first_row,
            scored,
            reasons,
            model.version,
            model.threshold,
            job.keep_text,
            job.output_prefix,
        )
        output.write(chunk.scored)
        rejects.write(chunk.rejects)
        counts.rows_scored += chunk.scored.num_rows
        counts.reasons.update(r for r in reasons if r is not None)
        progress.advance(table.num_rows)

    schema = None
    try:
        for table in source.chunks():
            if schema is None:
                schema = table.schema
                details = [name for name, _ in detail_columns(model, job.explain)]
                check_columns(schema, job.text_column, job.keep_text, job.output_prefix, details)
            texts = table.column(job.text_column).to_pylist()
            queued = sum(1 for *_, o in pending if isinstance(o, Future) and not o.done())
            if pool and queued < 2 * helpers:  # keep each helper one chunk ahead
                outcome = pool.submit(_score_in_worker, texts, job.max_chars, job.explain)
            else:
                outcome = score_values(model, texts, job.max_chars, job.explain)
            pending.append((table, counts.rows_in, outcome))
            counts.rows_in += table.num_rows
            # Write finished chunks in order; a bounded window keeps memory to a few chunks.
            while pending and (
                len(pending) > 2 * job.workers or not isinstance(pending[0][2], Future) or pending[0][2].done()
            ):
                finish_oldest()
        while pending:
            finish_oldest()
        empty_scored, empty_rejects = _empty_schemas(schema, job, model)
        output.commit(empty_scored)
        rejects.commit(empty_rejects)
    except BaseException:
        output.abort()
        rejects.abort()
        raise
    progress.finish()
    return counts


def _empty_schemas(schema: pa.Schema | None, job: ScoreJob, model: LoadedModel) -> tuple[pa.Schema, pa.Schema]:
    """Schemas for outputs of an input with no rows at all, so the files are still valid and typed."""
    base = [f for f in (schema or pa.schema([])) if job.keep_text or f.name != job.text_column]
    (score, label, version), (row_number, reason) = added_columns(job.output_prefix)
    details = [(job.output_prefix + name, kind) for name, kind in detail_columns(model, job.explain)]
    scored = pa.schema([*base, (score, pa.float64()), (label, pa.string()), (version, pa.string()), *details])
    rejects = pa.schema([(row_number, pa.int64()), (reason, pa.string()), *base])
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
