"""v3, the shipped stable model: served exactly from its data-only artifact, cheap to load, small."""

import json

import numpy as np
import pytest

from shared_features.sources import load_source, read_spec
from shared_features.text import normalize_texts
from tests.conftest import SHIPPED_MODELS

V3 = SHIPPED_MODELS / "toxicity" / "v3"


@pytest.fixture(scope="module")
def spec_sources():
    return {source.name: source for source in read_spec(SHIPPED_MODELS / "toxicity" / "sources.json")}


@pytest.mark.parametrize("source_name", ["toxigen2022", "hatemoji2022"])
def test_v3_scores_every_held_out_row_as_the_training_pipeline(
    shipped_registry, reference_proba, spec_sources, source_name, shared_data
):
    model = shipped_registry.load("toxicity", "v3")
    assert model.source == "data-only" and model.pipeline is None
    data = load_source(spec_sources[source_name])
    texts = data.part("validation")[0] + data.part("test")[0]
    expected = reference_proba("v3", texts)
    assert np.abs(model.score(texts) - expected).max() <= 1e-12
    per_text = np.concatenate([model.scorer.per_text([n])[0] for n in normalize_texts(texts)])
    assert np.abs(per_text - expected).max() <= 1e-12  # the one-text path too


def test_v3_manifest_names_its_sources_and_figures(shipped_registry):
    manifest = shipped_registry.manifest("toxicity", "v3")
    names = [s["name"] for s in manifest["training_data"]["sources"]]
    assert names == [
        "davidson2017",
        "dynahate2021",
        "toxigen2022",
        "hatemoji2022",
        "paradetox2022",
        "functional",
        "dixon2018",
        "toxicspans2021",
    ]
    for source in manifest["training_data"]["sources"]:
        assert len(source["sha256"]) == 64 and source["license"]
    assert manifest["metrics"]["sources"]["davidson2017"]["test"]["roc_auc"] >= 0.97
    assert manifest["evaluation"]["targets"]["davidson_roc_auc"]["met"] is True
    assert manifest["data_only"]["verified"]["rows"] > 100_000  # every held-out row was checked at training


def test_v3_artifact_is_small_and_loads_without_scikit_learn():
    size = sum(path.stat().st_size for path in V3.iterdir() if path.name != "model.joblib")
    assert size < 50 * 2**20
    import subprocess
    import sys

    code = (
        "import sys, shared_features.registry as r; m = r.ModelRegistry().load('toxicity', 'v3'); "
        "print(m.score(['have a lovely day'])[0]); print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False"
    assert 0 <= float(out[0]) <= 1


def test_every_shipped_version_has_a_generated_card():
    for version in ("v1", "v2", "v3"):
        card = (SHIPPED_MODELS / "toxicity" / version / "MODEL_CARD.md").read_text()
        assert card.startswith(f"# Model card: toxicity {version}")
        assert "| v1 |" in card and "| v2 |" in card and "| v3 |" in card  # the three compare in one table
        manifest = json.loads((SHIPPED_MODELS / "toxicity" / version / "manifest.json").read_text())
        assert manifest["evaluation"]["evaluated_at"] in card
