"""`--engine dask`: the same chunk scoring as the local engine, over a dask.distributed cluster.

Reads with `dask.dataframe.read_parquet`, scores each partition with `shared_features.batch`, and
writes partitioned Parquet datasets (OUTPUT and rejects are directories of part files). Workers
load the model from the same model directory (a path every worker can read) and verify its
checksum like any other load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import dask
import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
from distributed import Client, LocalCluster

from shared_features import LoadedModel, ModelRegistry
from shared_features.batch import added_columns, check_columns, detail_columns, score_chunk

from .io import parquet_files
from .scoring import Counts, ScoreJob, load_model, summary

REASON_COLUMN = "_reject_reason"  # marks rejected rows inside a partition until the split
_models: dict[tuple, LoadedModel] = {}  # per worker process: load each model once


def _model(model_dir: str, name: str, version: str, policy: str) -> LoadedModel:
    key = (model_dir, name, version)
    if key not in _models:
        _models[key] = ModelRegistry(model_dir, policy).load(name, version)
    return _models[key]


def score_partition(frame: pd.DataFrame, job: ScoreJob, offsets: list[int], partition_info=None) -> pd.DataFrame:
    """One partition -> its scored rows and its rejects in one frame, rejects marked by a reason."""
    model = _model(str(job.model_dir), job.model, job.version, job.on_version_mismatch)
    first_row = offsets[partition_info["number"]] if partition_info else 0
    table = pa.Table.from_pandas(frame, preserve_index=False)
    chunk = score_chunk(
        model, table, job.text_column, first_row, job.keep_text, job.max_chars, job.output_prefix, job.explain
    )
    _, (row_number, reason) = added_columns(job.output_prefix)
    scored = chunk.scored.append_column(REASON_COLUMN, pa.nulls(chunk.scored.num_rows, pa.string()))
    scored = scored.append_column(row_number, pa.nulls(chunk.scored.num_rows, pa.int64()))
    rejects = chunk.rejects.rename_columns(
        [REASON_COLUMN if name == reason else name for name in chunk.rejects.column_names]
    )
    combined = pa.concat_tables([scored, rejects], promote_options="default")
    return combined.to_pandas()


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


def run_dask(job: ScoreJob, scheduler: str | None = None) -> dict:
    started = time.perf_counter()
    model = load_model(job)  # verify here first: fail fast before the cluster does any work
    files = parquet_files(job.input)
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=job.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    output, rejects_out = Path(job.output), Path(job.rejects_path())
    tmp_out = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial"))
    tmp_rejects = Path(tempfile.mkdtemp(dir=rejects_out.parent, prefix=f".{rejects_out.name}.", suffix=".partial"))
    try:
        frame = dd.read_parquet(files, split_row_groups="adaptive")
        details = [name for name, _ in detail_columns(model, job.explain)]
        check_columns(
            pa.Schema.from_pandas(frame._meta, preserve_index=False),
            job.text_column,
            job.keep_text,
            job.output_prefix,
            details,
        )
        outputs, (row_number, reason) = added_columns(job.output_prefix)
        outputs = (*outputs, *(job.output_prefix + name for name in details))
        lengths = frame.map_partitions(len).compute().tolist()
        offsets = [sum(lengths[:i]) for i in range(len(lengths))]
        meta = score_partition(frame._meta, job, [0])
        marked = frame.map_partitions(score_partition, job, offsets, meta=meta)
        reasons = marked[REASON_COLUMN]
        scored = marked[reasons.isna()].drop(columns=[REASON_COLUMN, row_number])
        rejected = marked[~reasons.isna()].rename(columns={REASON_COLUMN: reason})
        rejected = rejected[[row_number, reason, *[c for c in scored.columns if c not in outputs]]]
        write_scored = scored.to_parquet(tmp_out, write_index=False, compute=False)
        write_rejects = rejected.to_parquet(tmp_rejects, write_index=False, compute=False)
        # One graph: every partition is scored once, feeding both outputs and the counts.
        _, _, reason_counts, rows_scored = dask.compute(
            write_scored, write_rejects, rejected[reason].value_counts(), scored.shape[0]
        )
        _publish(tmp_out, output)
        _publish(tmp_rejects, rejects_out)
    except BaseException:
        shutil.rmtree(tmp_out, ignore_errors=True)
        shutil.rmtree(tmp_rejects, ignore_errors=True)
        raise
    finally:
        client.close()
        if not scheduler:
            cluster.close()
    counts = Counts(rows_in=sum(lengths), rows_scored=int(rows_scored), reasons=Counter(reason_counts.to_dict()))
    return summary(job, model, counts, time.perf_counter() - started, "dask")
