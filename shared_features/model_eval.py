"""Everything a model card reports, computed from data the model was not tuned on.

- per source: the held-out test rows (and validation rows, which chose the threshold) of every
  training source of the spec, and every row of an evaluation-only source;
- the functional suite per functionality: the held-out half of the templates (what the card
  judges) and, for comparison, the train half;
- bias per identity group (`bias.py`): on each evaluation-only source that has both classes (the
  identity templates) and on the held-out real data (every training source's test rows but the
  functional suite's).

Every version is evaluated on the same rows, so the cards compare. A source that the model was
trained on reports its own test split; one it never saw reports the same rows as held out.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .artifacts import LoadedModel
from .bias import bias_metrics, mentions, worst
from .evaluation import evaluate
from .functional import case_categories, functionalities, generate
from .sources import UNKNOWN, SourceData
from .text import normalize_texts

REAL_HELD_OUT = "held-out real data"
# What the card states as this round's bar for a servable model (issue: a model people can trust).
TARGETS = {
    "functional_toxic_flagged": 0.90,
    "functional_clean_kept": 0.90,
    "functional_worst": 0.75,
    "davidson_roc_auc": 0.97,
    "worst_bpsn_auc": 0.90,
}


def _flag_rate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """For a source with one class only: the share the model gets right (no AUC exists)."""
    right = (scores >= threshold) == (labels == 1)
    return {"rows": int(len(labels)), "correct": round(float(right.mean()), 4) if len(labels) else None}


def score_sources(model: LoadedModel, datas: list[SourceData], say) -> dict[tuple[str, str], tuple]:
    """(texts, labels, scores) of every held-out part, scored once for every figure that uses it:
    a training source's validation and test rows, all of an evaluation-only source's."""
    scored = {}
    for data in datas:
        say(f"scoring {data.source.name}")
        parts = ("validation", "test") if data.source.use == "train" else ("all",)
        for part in parts:
            texts, labels = (data.texts, data.labels) if part == "all" else data.part(part)
            if texts:
                scored[data.source.name, part] = (texts, labels, model.score(texts))
    return scored


def evaluate_sources(model: LoadedModel, datas: list[SourceData], scored: dict) -> dict[str, dict]:
    report: dict[str, dict] = {}
    for data in datas:
        figures: dict[str, Any] = {"use": data.source.use}
        for part in ("validation", "test", "all"):
            if (data.source.name, part) not in scored:
                continue
            _, labels, scores = scored[data.source.name, part]
            name = "test" if part == "all" else part
            if len(np.unique(labels)) == 2:
                figures[name] = evaluate(labels, scores, model.threshold)
            else:
                figures[name] = _flag_rate(labels, scores, model.threshold)
        report[data.source.name] = figures
    return report


def evaluate_functional(model: LoadedModel) -> dict[str, Any]:
    """Pass rates per functionality, for each half of the suite."""
    described = {f["id"]: f for f in functionalities()}
    result: dict[str, Any] = {}
    for half in ("heldout", "train"):
        cases = generate(half)
        labels = np.array([case.label for case in cases])
        correct = (model.score([case.text for case in cases]) >= model.threshold) == (labels == 1)
        passed: dict[str, list[bool]] = defaultdict(list)
        by_group: dict[str, list[bool]] = defaultdict(list)
        for case, ok in zip(cases, correct.tolist(), strict=True):
            passed[case.functionality].append(ok)
            if case.group:
                by_group[case.group].append(ok)
        result[half] = {
            "cases": len(cases),
            "toxic_flagged": round(float(correct[labels == 1].mean()), 4),
            "clean_kept": round(float(correct[labels == 0].mean()), 4),
            "functionalities": {
                fid: {
                    "label": described[fid]["label"],
                    "description": described[fid]["description"],
                    "cases": len(oks),
                    "passed": round(float(np.mean(oks)), 4),
                }
                for fid, oks in passed.items()
            },
            "groups": {group: round(float(np.mean(oks)), 4) for group, oks in sorted(by_group.items())},
        }
    return result


def evaluate_bias(datas: list[SourceData], scored: dict, say) -> dict[str, dict]:
    sets: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
    for data in datas:
        key = (data.source.name, "all")
        if data.source.use == "eval" and key in scored and len(np.unique(scored[key][1])) == 2:
            sets[data.source.name] = scored[key]
    real = [
        scored[d.source.name, "test"]
        for d in datas
        if d.source.use == "train" and d.source.kind == "file" and (d.source.name, "test") in scored
    ]
    if real:
        sets[REAL_HELD_OUT] = (
            [text for texts, _, _ in real for text in texts],
            np.concatenate([labels for _, labels, _ in real]),
            np.concatenate([scores for _, _, scores in real]),
        )
    report = {}
    for name, (texts, labels, scores) in sets.items():
        say(f"bias metrics on {name}")
        groups = bias_metrics(labels, scores, mentions(texts))
        report[name] = {
            "rows": len(texts),
            "groups": groups,
            "worst_bpsn": worst(groups, "bpsn_auc"),
            "worst_bnsp": worst(groups, "bnsp_auc"),
            "worst_subgroup": worst(groups, "subgroup_auc"),
        }
    return report


def targets_met(evaluation: dict[str, Any]) -> dict[str, dict]:
    """Each bar with the measured value and whether it is met (None where nothing measured it)."""
    held = evaluation["functional"]["heldout"]
    worst_functionality = min(f["passed"] for f in held["functionalities"].values())
    davidson = evaluation["sources"].get("davidson2017", {}).get("test", {}).get("roc_auc")
    bpsn = [b["worst_bpsn"][1] for b in evaluation["bias"].values() if b["worst_bpsn"][1] is not None]
    measured = {
        "functional_toxic_flagged": held["toxic_flagged"],
        "functional_clean_kept": held["clean_kept"],
        "functional_worst": worst_functionality,
        "davidson_roc_auc": davidson,
        "worst_bpsn_auc": min(bpsn) if bpsn else None,
    }
    return {
        key: {"value": value, "target": TARGETS[key], "met": None if value is None else value >= TARGETS[key]}
        for key, value in measured.items()
    }


def evaluate_model(model: LoadedModel, datas: list[SourceData], progress=None) -> dict[str, Any]:
    say = progress or (lambda message: None)
    evaluation: dict[str, Any] = {
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "threshold": model.threshold,
        "data": [{"name": d.source.name, "sha256": d.sha256, "rows": len(d.texts), "use": d.source.use} for d in datas],
    }
    scored = score_sources(model, datas, say)
    evaluation["sources"] = evaluate_sources(model, datas, scored)
    say("functional suite")
    evaluation["functional"] = evaluate_functional(model)
    evaluation["bias"] = evaluate_bias(datas, scored, say)
    evaluation["targets"] = targets_met(evaluation)
    if model.categories:
        say("categories")
        evaluation["categories"] = evaluate_categories(model, datas, scored)
    return evaluation


def evaluate_categories(model: LoadedModel, datas: list[SourceData], scored: dict) -> dict[str, Any]:
    """Each category at its own threshold: held-out figures on every source that labels it, and on
    the held-out half of the functional suite (its cases labelled by `case_categories`), with the
    share of each functionality's cases the category flags."""
    names = list(model.categories)
    report: dict[str, Any] = {name: {**model.categories[name], "sources": {}, "functional": {}} for name in names}
    for data in datas:
        for part in ("test", "all"):
            if (data.source.name, part) not in scored:
                continue
            texts = scored[data.source.name, part][0]
            known = {name: data.category_part(part, name) for name in names if name in data.categories}
            if known:
                probabilities = model.category_scores(normalize_texts(texts))
            for name, (rows, labels) in known.items():
                column = probabilities[rows, names.index(name)]
                report[name]["sources"][data.source.name] = _category_figures(labels, column, model, name)
    cases = generate("heldout")
    probabilities = model.category_scores(normalize_texts([case.text for case in cases]))
    for name, labels in case_categories(cases).items():
        if name not in names:
            continue
        column = probabilities[:, names.index(name)]
        known = labels != UNKNOWN
        figures = _category_figures(labels[known], column[known], model, name)
        flagged: dict[str, list[bool]] = defaultdict(list)
        for case, score in zip(cases, column.tolist(), strict=True):
            flagged[case.functionality].append(score >= model.categories[name]["threshold"])
        figures["flagged_per_functionality"] = {fid: round(float(np.mean(v)), 4) for fid, v in flagged.items()}
        report[name]["functional"] = figures
    return report


def _category_figures(labels: np.ndarray, scores: np.ndarray, model: LoadedModel, name: str) -> dict[str, Any]:
    threshold = model.categories[name]["threshold"]
    if len(np.unique(labels)) == 2:
        figures = evaluate(labels, scores, threshold)
        return {
            "rows": int(len(labels)),
            "roc_auc": figures["roc_auc"],
            "flagged": figures["classes"]["toxic"]["recall"],
            "kept": figures["classes"]["clean"]["recall"],
        }
    return {"rows": int(len(labels)), "roc_auc": None, **_flag_rate(labels, scores, threshold)}
