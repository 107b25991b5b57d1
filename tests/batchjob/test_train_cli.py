import json

import pytest

from batchjob.cli import cli
from shared_features import load_artifact

from .conftest import run_batchjob


def train(runner, model_dir, data, version, *extra, name="t"):
    """`batchjob --model-dir DIR train --data DATA --name NAME --version VERSION ...` in-process."""
    args = ["--model-dir", str(model_dir), "train", "--data", str(data), "--name", name, "--version", version]
    return runner.invoke(cli, [*args, *extra])


def test_train_writes_a_loadable_artifact(runner, tiny_csv, tmp_path):
    result = train(runner, tmp_path, tiny_csv, "v9", "--preset", "char-ngrams", "--threshold", "auto")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    model = load_artifact(tmp_path / "t" / "v9")
    assert summary["sha256"] == model.sha256 and summary["threshold"] == model.threshold
    assert model.manifest["preset"] == "char-ngrams"


def test_train_params_override_is_recorded(runner, tiny_csv, tmp_path):
    result = train(runner, tmp_path, tiny_csv, "v1", "--params", '{"classifier": {"C": 0.5}}')
    assert result.exit_code == 0, result.output
    assert load_artifact(tmp_path / "t" / "v1").manifest["params"]["classifier"]["C"] == 0.5


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "1.5"], "Invalid value for '--threshold'"),
        (["--params", "{not json"], "Invalid value for '--params'"),
        (["--params", '{"bogus": {}}'], "unknown params section"),
        (["--preset", "nope"], "Invalid value for '--preset'"),
    ],
)
def test_train_usage_errors_exit_2(runner, tiny_csv, tmp_path, extra, message):
    result = train(runner, tmp_path, tiny_csv, "v1", *extra)
    assert result.exit_code == 2
    assert message in result.output


def test_existing_version_is_not_overwritten(runner, tiny_csv, tiny_model_root):
    result = train(runner, tiny_model_root, tiny_csv, "v1", name="toxicity")
    assert result.exit_code == 2 and "immutable" in result.output


def test_subprocess_bad_dataset_fails_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,7\n")
    proc = run_batchjob("--model-dir", str(tmp_path), "train", "--data", str(bad), "--name", "t", "--version", "v1")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"Error: {bad}: column 'label' must hold only 0 and 1"]
    assert "Traceback" not in proc.stderr


def test_subprocess_train_reproduces_shipped_v1(shared_data, shipped_registry, tmp_path):
    proc = run_batchjob(
        "--model-dir",
        str(tmp_path),
        "train",
        "--data",
        str(shared_data),
        "--name",
        "toxicity",
        "--version",
        "v1",
        "--preset",
        "word-ngrams",
        "--threshold",
        "0.5",
    )
    assert proc.returncode == 0, proc.stderr
    retrained = load_artifact(tmp_path / "toxicity" / "v1")
    shipped = shipped_registry.load("toxicity", "v1")
    assert retrained.manifest["metrics"] == shipped.manifest["metrics"]
    assert retrained.manifest["params"] == shipped.manifest["params"]
    texts = ["you are a moron", "have a nice day", "@user http://x.co lol"]
    # Equal to the last few bits only: the solver's float sums can round differently on another CPU
    # (seen: 2.5e-14 between two x86-64 machines), which no metric or label notices.
    assert retrained.score(texts) == pytest.approx(shipped.score(texts), rel=0, abs=1e-9)
