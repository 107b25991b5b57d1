"""Bias metrics computed by hand on small examples (Borkan et al. 2019's definitions)."""

import numpy as np
import pytest

from shared_features.bias import _auc, bias_metrics, mentions, worst


def test_auc_counts_ties_half_and_needs_both_classes():
    assert _auc(np.array([0, 1]), np.array([0.2, 0.8])) == 1.0
    assert _auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert _auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_subgroup_bpsn_and_bnsp_by_hand():
    # Group texts: a clean one scored high (0.7) and a toxic one at 0.9. Background: toxic 0.6, clean 0.1.
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.7, 0.9, 0.6, 0.1])
    inside = np.array([True, True, False, False])
    report = bias_metrics(labels, scores, {"g": inside})["g"]
    assert report["subgroup_auc"] == 1.0  # 0.9 > 0.7
    assert report["bpsn_auc"] == 0.0  # background toxic 0.6 < subgroup clean 0.7: a false positive driven by g
    assert report["bnsp_auc"] == 1.0  # subgroup toxic 0.9 > background clean 0.1
    assert report["examples"] == 2 and not report["judged"]


def test_mentions_match_whole_words_and_phrases():
    found = mentions(["My neighbours are Muslim", "muslimah", "African Americans vote", "a gayer day"])
    assert found["muslim"].tolist() == [True, False, False, False]
    assert found["black"].tolist() == [False, False, True, False]
    assert found["gay, lesbian, bisexual"].tolist() == [False, False, False, False]


def test_worst_ignores_groups_too_small_to_judge():
    report = {
        "a": {"bpsn_auc": 0.5, "judged": False},
        "b": {"bpsn_auc": 0.8, "judged": True},
        "c": {"bpsn_auc": 0.9, "judged": True},
    }
    assert worst(report, "bpsn_auc") == ("b", 0.8)
    assert worst({}, "bpsn_auc") == (None, None)


@pytest.mark.parametrize("metric", ["subgroup_auc", "bpsn_auc", "bnsp_auc"])
def test_a_model_blind_to_the_group_scores_the_same_as_overall(metric):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = labels * 0.5 + rng.random(2000) * 0.7
    inside = rng.random(2000) < 0.5  # membership independent of score and label
    value = bias_metrics(labels, scores, {"g": inside})["g"][metric]
    assert value == pytest.approx(_auc(labels, scores), abs=0.03)
