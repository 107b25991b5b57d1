"""The committed artifacts: they verify, load and meet the quality bar the README states."""

import numpy as np
import pytest

from shared_features.dataset import read_labeled
from shared_features.training import split


def test_shipped_models_load_with_verified_checksums(shipped_registry):
    assert shipped_registry.versions("toxicity") == ["v1", "v2", "v3"]
    v1 = shipped_registry.load("toxicity", "v1")
    v2 = shipped_registry.load("toxicity", "v2")
    assert v1.threshold == 0.5
    assert v2.threshold != 0.5 and v2.manifest["threshold_source"] == "validation macro-F1"
    assert v1.manifest["metrics"]["test"]["roc_auc"] >= 0.97
    assert v2.manifest["metrics"]["test"]["roc_auc"] > v1.manifest["metrics"]["test"]["roc_auc"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_shipped_metrics_recompute_on_held_out_split(shipped_registry, shared_data, version):
    """The manifest's test metrics are what the artifact really scores on the held-out rows."""
    from sklearn.metrics import roc_auc_score

    model = shipped_registry.load("toxicity", version)
    data = read_labeled(shared_data)
    assert data.sha256 == model.manifest["training_data"]["sha256"]
    test_x, test_y = split(data, model.manifest["seed"])["test"]
    auc = roc_auc_score(test_y, model.score(test_x))
    assert np.isclose(auc, model.manifest["metrics"]["test"]["roc_auc"], atol=1e-4)
