"""`batchjob score` through click's runner and as a subprocess."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchjob.cli import cli
from tests.conftest import SHIPPED_MODELS, make_rows

from .conftest import BATCHJOB, run_batchjob

BAD_ROWS = {3: None, 8: "   \n ", 13: "\u00a0\u200b", 21: "x" * 2001}


def make_input(tmp_path, fmt="csv", rows=60, bad=True, name="in") -> tuple[Path, pd.DataFrame]:
    frame = make_rows(rows, seed=11).drop(columns=["label"])
    frame["region"] = [f"r{i % 3}" for i in range(rows)]
    if bad:
        for index, value in BAD_ROWS.items():
            if index < rows:
                frame.loc[index, "text"] = value
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path, frame


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.suffix == ".csv" else pd.read_parquet(path)


def invoke(runner, *args):
    return runner.invoke(cli, ["--model-dir", str(SHIPPED_MODELS), "score", *map(str, args)])


@pytest.mark.parametrize(
    "in_fmt, out_fmt", [("csv", "csv"), ("csv", "parquet"), ("parquet", "parquet"), ("parquet", "csv")]
)
def test_formats_columns_order_scores_and_rejects(runner, tmp_path, shipped_registry, reference_proba, in_fmt, out_fmt):
    source, frame = make_input(tmp_path, in_fmt)
    output = tmp_path / f"out.{out_fmt}"
    result = invoke(runner, source, "--output", output, "--chunk-size", 7, "--workers", 1)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows_in"] == 60 and summary["rows_rejected"] == len(BAD_ROWS)
    assert summary["rows_in"] == summary["rows_scored"] + summary["rows_rejected"]
    assert summary["reject_reasons"] == {"blank": 2, "null": 1, "too_long": 1}
    assert summary["model"]["sha256"] == shipped_registry.manifest("toxicity", "v1")["sha256"]

    scored = read(output)
    assert list(scored.columns) == ["id", "region", "score", "label", "model_version"]
    good = frame.drop(index=list(BAD_ROWS))
    assert scored["id"].astype(int).tolist() == good["id"].tolist()  # input order kept
    expected = reference_proba("v1", good["text"].tolist())
    np.testing.assert_allclose(scored["score"].astype(float).to_numpy(), expected, atol=1e-12, rtol=0)
    assert scored["label"].tolist() == ["toxic" if s >= 0.5 else "clean" for s in expected]
    assert set(scored["model_version"]) == {"v1"}

    rejects = read(tmp_path / f"out.rejects.{out_fmt}")
    assert list(rejects.columns) == ["row_number", "reason", "id", "region"]
    assert rejects["row_number"].astype(int).tolist() == sorted(BAD_ROWS)
    assert rejects["reason"].tolist() == ["null", "blank", "blank", "too_long"]


def test_v2_keep_text_and_summary_file(runner, tmp_path, shipped_registry):
    source, frame = make_input(tmp_path, "parquet", bad=False)
    output, summary_path = tmp_path / "o.parquet", tmp_path / "reports" / "summary.json"
    result = invoke(
        runner,
        source,
        "--output",
        output,
        "--model-version",
        "v2",
        "--keep-text",
        "--summary",
        summary_path,
        "--rejects",
        tmp_path / "bad.parquet",
        "--workers",
        1,
    )
    assert result.exit_code == 0, result.output
    scored = read(output)
    assert scored["text"].tolist() == frame["text"].tolist()
    v2 = shipped_registry.load("toxicity", "v2")
    np.testing.assert_allclose(scored["score"].to_numpy(), v2.score(frame["text"].tolist()), atol=1e-12, rtol=0)
    assert json.loads(summary_path.read_text()) == json.loads(result.output)
    assert read(tmp_path / "bad.parquet").empty


def test_parallel_workers_keep_order_across_many_chunks(runner, tmp_path):
    source, _ = make_input(tmp_path, "parquet", rows=400)
    single, parallel = tmp_path / "one.parquet", tmp_path / "two.parquet"
    assert invoke(runner, source, "--output", single, "--workers", 1, "--chunk-size", 13).exit_code == 0
    result = invoke(runner, source, "--output", parallel, "--workers", 2, "--chunk-size", 13)
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(read(single), read(parallel))
    pd.testing.assert_frame_equal(read(tmp_path / "one.rejects.parquet"), read(tmp_path / "two.rejects.parquet"))


def test_directory_of_parquet_files_in_natural_order(runner, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    frames = []
    for part in (2, 10, 1):
        _, frame = make_input(folder, "parquet", rows=5, bad=False, name=f"part.{part}")
        frames.append((part, frame))
    result = invoke(runner, folder, "--output", tmp_path / "o.csv", "--workers", 1)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows_in"] == 15
    assert len(read(tmp_path / "o.csv")) == 15


def test_scores_equal_the_service(runner, tmp_path):
    from tests.service.conftest import AUTH, make_app

    source, frame = make_input(tmp_path, "csv", rows=30, bad=False)
    assert invoke(runner, source, "--output", tmp_path / "o.csv", "--workers", 1).exit_code == 0
    batch_scores = read(tmp_path / "o.csv")["score"].astype(float).tolist()
    client = make_app().test_client()
    served = [client.post("/v1/predict", json={"text": t}, headers=AUTH).json["score"] for t in frame["text"]]
    np.testing.assert_allclose(batch_scores, served, atol=1e-12, rtol=0)


def test_non_string_text_column_is_rejected_per_row(runner, tmp_path):
    source = tmp_path / "ints.parquet"
    pd.DataFrame({"id": [1, 2], "text": [10, 20]}).to_parquet(source)
    result = invoke(runner, source, "--output", tmp_path / "o.parquet", "--workers", 1)
    assert result.exit_code == 0
    assert json.loads(result.output)["reject_reasons"] == {"not_a_string": 2}


def test_empty_input_gives_valid_empty_outputs(runner, tmp_path):
    source = tmp_path / "empty.csv"
    source.write_text("id,text\n")
    result = invoke(runner, source, "--output", tmp_path / "o.parquet", "--workers", 1)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows_in"] == 0
    assert list(read(tmp_path / "o.parquet").columns) == ["id", "score", "label", "model_version"]


def test_exit_3_when_rejects_exceed_the_rate(runner, tmp_path):
    source, _ = make_input(tmp_path, "csv")
    result = invoke(runner, source, "--output", tmp_path / "o.csv", "--max-reject-rate", 0.05, "--workers", 1)
    assert result.exit_code == 3
    assert "reject rate 0.0666667 is above --max-reject-rate 0.05" in result.output
    assert (tmp_path / "o.csv").exists()  # the scoring itself finished; the rate is the verdict


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "Invalid value for '--workers'"),
        (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler needs --engine dask"),
        (["--engine", "dask"], "--engine dask reads Parquet"),
        (["--max-reject-rate", "2"], "Invalid value for '--max-reject-rate'"),
    ],
)
def test_usage_errors_exit_2(runner, tmp_path, args, message):
    source, _ = make_input(tmp_path, "csv")
    result = invoke(runner, source, "--output", tmp_path / "o.csv", *args)
    assert result.exit_code == 2 and message in result.output


def corrupt_parquet(tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    return path


@pytest.mark.parametrize(
    "make_source, extra, message",
    [
        (lambda p: p / "missing.csv", [], "no such file"),
        (corrupt_parquet, [], "cannot read"),
        (lambda p: make_input(p, "csv")[0], ["--text-column", "body"], "input has no column 'body'"),
        (lambda p: make_input(p, "csv")[0], ["--model-version", "v9"], "model toxicity/v9 not found"),
    ],
)
def test_job_failures_exit_1_with_one_line_and_no_output(tmp_path, make_source, extra, message):
    source = make_source(tmp_path)
    output = tmp_path / "o.parquet"
    proc = run_batchjob("--model-dir", str(SHIPPED_MODELS), "score", str(source), "--output", str(output), *extra)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not output.exists() and not list(tmp_path.glob(".*partial"))


def test_debug_shows_the_traceback(tmp_path):
    proc = run_batchjob("--debug", "score", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "o.csv"))
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_subprocess_success_prints_only_json_on_stdout_and_progress_on_stderr(tmp_path):
    source, _ = make_input(tmp_path, "parquet", rows=30_000, bad=False)
    proc = run_batchjob(
        "score",
        str(source),
        "--output",
        str(tmp_path / "o.parquet"),
        "--chunk-size",
        "100",
        "--workers",
        "1",
        "--progress-interval",
        "0.1",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows_scored"] == 30_000
    assert "progress: " in proc.stderr and "rows/s" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_job_leaves_no_output(tmp_path, sig):
    source, _ = make_input(tmp_path, "parquet", rows=60_000, bad=False)
    output = tmp_path / "o.parquet"
    proc = subprocess.Popen(
        [str(BATCHJOB), "score", str(source), "--output", str(output), "--chunk-size", "500", "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    deadline = time.time() + 30
    while time.time() < deadline and not list(tmp_path.glob(".o.parquet.*partial")):
        time.sleep(0.02)
    assert list(tmp_path.glob(".o.parquet.*partial")), "the job should be writing by now"
    time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert not output.exists()
    if sig == signal.SIGTERM:
        assert proc.returncode == 1 and "interrupted" in stderr.decode()
        assert not list(tmp_path.glob(".*partial"))  # cleaned up
    else:
        assert proc.returncode == -signal.SIGKILL


FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(1,2)", "-1+2", "@import", "-3.5", "+7", "plain text"]


def formula_input(tmp_path) -> Path:
    path = tmp_path / "formulas.csv"
    pd.DataFrame({"text": FORMULAS, "note": FORMULAS}).to_csv(path, index=False)
    return path


def test_csv_output_escapes_formula_cells_by_default(runner, tmp_path):
    out = tmp_path / "out.csv"
    result = invoke(runner, formula_input(tmp_path), "--output", out, "--keep-text")
    assert result.exit_code == 0, result.output
    frame = read(out)
    escaped = ["'=cmd|' /C calc'!A0", "'+SUM(1,2)", "'-1+2", "'@import", "-3.5", "+7", "plain text"]
    assert frame["text"].tolist() == escaped and frame["note"].tolist() == escaped  # every string column
    assert frame["score"].astype(float).between(0, 1).all()


def test_no_escape_formulas_writes_cells_verbatim_in_a_subprocess(tmp_path):
    out = tmp_path / "out.csv"
    args = ["--model-dir", str(SHIPPED_MODELS), "score", str(formula_input(tmp_path)), "--output", str(out)]
    result = run_batchjob(*args, "--keep-text", "--no-escape-formulas")
    assert result.returncode == 0, result.stderr
    assert read(out)["text"].tolist() == FORMULAS
    escaped = run_batchjob(*args[:-1], str(tmp_path / "esc.csv"), "--keep-text")
    assert escaped.returncode == 0 and read(tmp_path / "esc.csv")["text"].tolist()[0] == "'=cmd|' /C calc'!A0"


def test_parquet_output_is_never_escaped(runner, tmp_path):
    out = tmp_path / "out.parquet"
    assert invoke(runner, formula_input(tmp_path), "--output", out, "--keep-text").exit_code == 0
    assert read(out)["text"].tolist() == FORMULAS
