"""`batchjob train` on several sources and `batchjob evaluate` on a tiny model (#23)."""

import json

import pandas as pd
import pytest

from batchjob.cli import cli
from shared_features import load_artifact
from shared_features.model_card import CARD_FILE
from shared_features.sources import Source, load_source, load_spec, read_spec
from shared_features.text import normalize_text
from tests.conftest import make_rows

from .conftest import run_batchjob


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Three tiny sources: 0/1 labels with a seeded split, toxic/clean labels with a split column,
    and an evaluation-only set that names identity groups."""
    root = tmp_path_factory.mktemp("sources")
    make_rows(300, seed=1).to_csv(root / "alpha.csv", index=False)
    beta = make_rows(200, seed=2)
    beta["label"] = beta["label"].map({1: "toxic", 0: "clean"})
    beta["split"] = ["test" if i % 5 == 0 else "train" for i in range(len(beta))]
    alpha = load_source(Source("alpha", "alpha.csv"), root)
    planted = alpha.part("train")[0][0]
    beta.loc[0, "text"] = planted  # a beta test row that is also an alpha training row
    (root / "planted.txt").write_text(planted)
    beta.to_csv(root / "beta.csv", index=False)
    identity = [
        {"text": f"{w} {g} people", "label": lab}
        for g in ("gay", "muslim", "black")
        for w, lab in (("hug", "clean"), ("love", "clean"), ("stupid idiot", "toxic"), ("ugly moron", "toxic"))
    ]
    pd.DataFrame(identity * 20).to_csv(root / "identity.csv", index=False)
    spec = {
        "sources": [
            {"name": "alpha", "path": "alpha.csv", "license": "CC0", "attribution": "Alpha et al."},
            {
                "name": "beta",
                "path": "beta.csv",
                "split_column": "split",
                "splits": {"train": ["train"], "test": ["test"]},
                "weight": 2,
                "cap": 100,
            },
            {"name": "functional", "kind": "functional", "weight": 3},
            {"name": "identity", "path": "identity.csv", "use": "eval", "license": "CC-BY 4.0"},
        ]
    }
    (root / "spec.json").write_text(json.dumps(spec))
    return root


def run_train(runner, out, *sources: str, version: str = "v1", name: str = "t"):
    """`batchjob train SOURCES... --name NAME --version VERSION --output-dir OUT` in-process."""
    return runner.invoke(cli, ["train", *sources, "--name", name, "--model-version", version, "--output-dir", str(out)])


def train_spec(runner, data_root, out, *extra):
    args = [
        "train",
        "--data-spec",
        str(data_root / "spec.json"),
        "--data-root",
        str(data_root),
        "--name",
        "toxicity",
        "--model-version",
        "v1",
        "--preset",
        "robust-words",
        "--threshold",
        "auto",
        "--output-dir",
        str(out),
    ]
    return runner.invoke(cli, [*args, *extra])


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("models")
    result = train_spec(CliRunner(), data_root, out)
    assert result.exit_code == 0, result.output
    return out


def test_the_manifest_records_every_source_and_its_figures(trained, data_root):
    manifest = load_artifact(trained / "toxicity" / "v1", allow_pickle=False).manifest
    sources = {s["name"]: s for s in manifest["training_data"]["sources"]}
    assert list(sources) == ["alpha", "beta", "functional", "identity"]
    assert sources["alpha"]["license"] == "CC0" and len(sources["alpha"]["sha256"]) == 64
    assert sources["beta"]["weight"] == 2 and sources["beta"]["cap"] == 100
    assert sum(sources["beta"]["rows_used"].values()) == 100  # capped
    assert sources["beta"]["splits"] == {
        "train": 128,
        "validation": 32,
        "test": 40,
    }  # its own column; validation carved
    assert sources["identity"]["rows_used"] == {"toxic": 0, "clean": 0}  # evaluation only
    assert set(manifest["metrics"]["sources"]) == {"alpha", "beta", "functional", "identity"}
    assert manifest["metrics"]["sources"]["alpha"]["test"]["roc_auc"] is not None
    assert "test" not in manifest["metrics"]["sources"]["functional"]  # its held-out half is the card's
    assert manifest["data_only"]["verified"]["max_abs_difference"] <= 1e-12


def test_no_training_row_is_another_sources_evaluation_row(data_root):
    from shared_features.training import evaluation_keys, training_rows

    datas = [load_source(source, data_root) for source in read_spec(data_root / "spec.json")]
    planted = (data_root / "planted.txt").read_text()
    texts, _, weights, report, _ = training_rows(datas, evaluation_keys(datas), seed=42)
    assert normalize_text(planted) not in {normalize_text(t) for t in texts}
    assert report["alpha"]["dropped_as_evaluation_rows"] >= 1
    alpha_train = datas[0].part("train")[0]
    assert planted in alpha_train  # it would have been trained on without the rule
    assert weights.mean() == pytest.approx(1.0)


def test_the_spec_is_refused_with_a_clear_message(runner, data_root, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sources": [{"name": "x", "path": "alpha.csv", "weight": -1}]}))
    result = run_train(runner, str(tmp_path), "--data-spec", str(bad), "--data-root", str(data_root))
    assert result.exit_code == 1 and "weight must be a positive number" in result.output
    both = run_train(runner, str(tmp_path), "--data-spec", str(bad), "--data", str(data_root / "alpha.csv"))
    assert both.exit_code == 2 and "not both" in both.output


def test_labels_outside_the_mapping_are_refused(runner, data_root, tmp_path):
    frame = pd.read_csv(data_root / "beta.csv")
    frame.loc[3, "label"] = "maybe"
    frame.to_csv(tmp_path / "beta.csv", index=False)
    (tmp_path / "spec.json").write_text(json.dumps({"sources": [{"name": "b", "path": "beta.csv"}]}))
    result = run_train(
        runner, str(tmp_path / "m"), "--data-spec", str(tmp_path / "spec.json"), "--data-root", str(tmp_path)
    )
    assert result.exit_code == 1 and "['maybe'] are neither toxic" in result.output


def test_several_data_files_train_as_several_sources(runner, data_root, tmp_path):
    result = run_train(
        runner, str(tmp_path), "--data", str(data_root / "alpha.csv"), "--data", str(data_root / "alpha.csv")
    )
    assert result.exit_code == 2 and "its own file name" in result.output
    copy = tmp_path / "gamma.csv"
    copy.write_bytes((data_root / "alpha.csv").read_bytes())
    result = run_train(runner, str(tmp_path), "--data", str(data_root / "alpha.csv"), "--data", str(copy), version="v2")
    assert result.exit_code == 0, result.output
    sources = load_artifact(tmp_path / "t" / "v2").manifest["training_data"]["sources"]
    assert [s["name"] for s in sources] == ["alpha.csv", "gamma.csv"]
    # gamma's rows are all alpha's: its train rows are duplicates, or held out in alpha.
    assert sum(sources[1]["rows_used"].values()) == 0


def test_evaluate_writes_figures_and_a_card(runner, trained, data_root):
    result = runner.invoke(
        cli,
        [
            "--model-dir",
            str(trained),
            "evaluate",
            "--model-version",
            "v1",
            "--data-spec",
            str(data_root / "spec.json"),
            "--data-root",
            str(data_root),
        ],
    )
    assert result.exit_code == 0, result.output
    targets = json.loads(result.stdout)["targets"]
    assert set(targets) == {
        "functional_toxic_flagged",
        "functional_clean_kept",
        "functional_worst",
        "davidson_roc_auc",
        "worst_bpsn_auc",
    }
    assert targets["davidson_roc_auc"]["value"] is None and targets["davidson_roc_auc"]["met"] is None
    manifest = json.loads((trained / "toxicity" / "v1" / "manifest.json").read_text())
    evaluation = manifest["evaluation"]
    assert evaluation["functional"]["heldout"]["cases"] > 1000
    assert len(evaluation["functional"]["heldout"]["functionalities"]) >= 25
    assert set(evaluation["bias"]) == {"identity", "held-out real data"}
    assert evaluation["bias"]["identity"]["groups"]["muslim"]["examples"] == 80
    load_artifact(trained / "toxicity" / "v1", allow_pickle=False)  # still verifies: only the manifest grew
    card = (trained / "toxicity" / "v1" / CARD_FILE).read_text()
    for heading in (
        "## Label definition",
        "## The bar for a servable model",
        "## Versions compared",
        "## Data",
        "## Held-out figures per source",
        "## Functional suite",
        "## Bias per identity group",
        "## Known failure modes",
        "Intended use",
        "Out of scope",
    ):
        assert heading in card, heading
    assert "alpha: Alpha et al. License: CC0." in card and "| identity | eval |" in card


def test_subprocess_train_and_evaluate(data_root, tmp_path):
    common = ["--data-root", str(data_root)]
    proc = run_batchjob(
        "train",
        "--data-spec",
        str(data_root / "spec.json"),
        *common,
        "--name",
        "toxicity",
        "--model-version",
        "v7",
        "--preset",
        "robust-words",
        "--output-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "batchjob: fitting on" in proc.stderr  # progress on stderr, the JSON alone on stdout
    assert json.loads(proc.stdout)["version"] == "v7"
    proc = run_batchjob(
        "--model-dir",
        str(tmp_path),
        "evaluate",
        "--model-version",
        "v7",
        "--data-spec",
        str(data_root / "spec.json"),
        *common,
        "--no-card",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["targets"]["functional_clean_kept"]["value"] is not None
    assert not (tmp_path / "toxicity" / "v7" / CARD_FILE).exists()


def test_the_shipped_spec_reads():
    names = [source.name for source in read_spec("models/toxicity/sources.json")]
    assert names[:1] == ["davidson2017"] and "functional" in names and "dixon2018" in names
    assert all(source.license for source in read_spec("models/toxicity/sources.json"))


def test_a_spec_with_no_test_rows_trains_and_says_so(runner, tmp_path):
    """Only the functional suite's train half: validation rows, no test rows (the pooled test is null)."""
    (tmp_path / "spec.json").write_text(json.dumps({"sources": [{"name": "functional", "kind": "functional"}]}))
    result = run_train(runner, tmp_path / "m", "--data-spec", str(tmp_path / "spec.json"), "--preset", "robust-words")
    assert result.exit_code == 0, result.output
    manifest = load_artifact(tmp_path / "m" / "t" / "v1", allow_pickle=False).manifest
    assert manifest["metrics"]["test"] is None and manifest["splits"]["test"] == 0
    assert manifest["metrics"]["sources"]["functional"]["validation"]["roc_auc"] is not None


def test_the_model_family_probe_compares_families_on_validation_rows(data_root):
    """`python -m bench.model_families`, as docs/models.md runs it: one table row per family."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    probe = [sys.executable, "-m", "bench.model_families", "--spec", str(data_root / "spec.json")]
    probe += ["--data-root", str(data_root), "--family", "linear", "--family", "mlp:4:1e-2:3"]
    proc = subprocess.run(probe, cwd=repo, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    # Judged on each training source's validation rows: never its test rows, never an eval source.
    datas = [d for d in load_spec(data_root / "spec.json", data_root) if d.source.use == "train"]
    counts = ", ".join(f"{d.source.name} {len(d.part('validation')[0])}" for d in datas if len(d.part("validation")[0]))
    assert f"validation rows: {counts}\n" in proc.stdout
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| `")]
    assert [row[0] for row in rows] == ["| `linear`", "| `mlp:4:1e-2:3`"]
    for row in rows:
        flagged, kept = float(row[3]), float(row[4])
        assert 0 <= flagged <= 1 and 0 <= kept <= 1
        assert "alpha " in row[6] and "beta " in row[6]  # every training source's validation AUC
    for family in ("forest", "linear:{C", "mlp:4"):
        refused = subprocess.run([*probe[:-4], "--family", family], cwd=repo, capture_output=True, text=True)
        assert refused.returncode != 0 and f"unknown family '{family}'" in refused.stderr
