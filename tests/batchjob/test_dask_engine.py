"""`--engine dask` on a real LocalCluster with 2 worker processes: same output as the local engine."""

import json

import pandas as pd
import pytest

from tests.conftest import SHIPPED_MODELS

from .conftest import run_batchjob
from .test_score_cli import BAD_ROWS, make_input

pytest.importorskip("distributed", reason="the dask extra is not installed (pip install '.[dask]')")


@pytest.mark.slow
def test_dask_output_equals_local(tmp_path):
    source, _ = make_input(tmp_path, "parquet", rows=500)
    local = run_batchjob(
        "--model-dir",
        str(SHIPPED_MODELS),
        "score",
        str(source),
        "--output",
        str(tmp_path / "local.parquet"),
        "--workers",
        "1",
    )
    assert local.returncode == 0, local.stderr
    dask = run_batchjob(
        "--model-dir",
        str(SHIPPED_MODELS),
        "score",
        str(source),
        "--output",
        str(tmp_path / "dask_out"),
        "--engine",
        "dask",
        "--workers",
        "2",
        timeout=180,
    )
    assert dask.returncode == 0, dask.stderr
    summary = json.loads(dask.stdout)
    assert summary["engine"] == "dask" and summary["rows_in"] == 500
    assert summary["rows_rejected"] == len(BAD_ROWS) and summary == {**summary, "rows_scored": 500 - len(BAD_ROWS)}
    assert (tmp_path / "dask_out").is_dir()
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "local.parquet"),
        pd.read_parquet(tmp_path / "dask_out").reset_index(drop=True),
        check_dtype=False,
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "local.rejects.parquet"),
        pd.read_parquet(tmp_path / "dask_out.rejects").reset_index(drop=True),
        check_dtype=False,
    )
    assert not list(tmp_path.glob(".*partial"))
