"""MODEL_CARD.md, generated from a manifest and its evaluation: nothing in it is typed by hand
except the label definition (`models/toxicity/eval/label_definition.md`) and the fixed prose below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .layout import DEFAULT_MODEL_ROOT
from .model_eval import REAL_HELD_OUT
from .sources import Source

LABEL_DEFINITION = DEFAULT_MODEL_ROOT / "toxicity" / "eval" / "label_definition.md"
CARD_FILE = "MODEL_CARD.md"

INTENDED_USE = """\
**Intended use.** Scoring short English texts (posts, comments, chat) for a moderation queue:
rank and route texts for people to review, hold likely attacks, and measure how much of a
stream is abusive. A score is P(toxic) as defined below; `label` compares it with the threshold.

**Out of scope.** Removing content or sanctioning people without a human in the loop; languages
other than English; long documents (texts over 2,000 characters are refused); judging intent,
irony or who is speaking (a bag of words does not see that); any decision about a person's
identity. Scores are not comparable across model versions without recalibration."""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _credit(name: str, spec: dict[str, Source]) -> str:
    source = spec.get(name)
    if source is None or not source.license:
        return name
    origin = f" From {source.origin}." if source.origin else ""
    return f"{name}: {source.attribution} License: {source.license}.{origin}"


def _sources_section(manifest: dict, spec: dict[str, Source]) -> list[str]:
    lines = ["## Data", ""]
    trained = manifest["training_data"].get("sources")
    if trained:
        lines.append("Trained on (rows used after de-duplication and caps; weight is per row):")
        lines.append("")
        rows = [
            [s["name"], str(s["rows_used"]["toxic"]), str(s["rows_used"]["clean"]), f"{s['weight']:g}", s["use"]]
            for s in trained
        ]
        lines += _table(["source", "toxic rows", "clean rows", "weight", "use"], rows)
    else:
        data = manifest["training_data"]
        lines.append(f"Trained on one file, `{data['source']}` ({data['rows']} rows, sha256 `{data['sha256'][:12]}…`).")
    lines += ["", "Credits (each license asks for attribution):", ""]
    named = [d["name"] for d in manifest.get("evaluation", {}).get("data", [])] or list(spec)
    lines += [f"- {_credit(name, spec)}" for name in named]
    return lines


def _metrics_section(evaluation: dict) -> list[str]:
    lines = ["## Held-out figures per source", "", f"At the threshold {evaluation['threshold']:g}.", ""]
    rows = []
    for name, figures in evaluation["sources"].items():
        test = figures.get("test", {})
        if "roc_auc" in test:
            classes = test["classes"]
            rows.append(
                [
                    name,
                    figures["use"],
                    str(classes["toxic"]["support"] + classes["clean"]["support"]),
                    _num(test["roc_auc"]),
                    _num(test["macro_f1"]),
                    _pct(classes["toxic"]["recall"]),
                    _pct(classes["clean"]["recall"]),
                ]
            )
        elif test:
            rows.append(
                [name, figures["use"], str(test["rows"]), "n/a (one class)", "n/a", _pct(test["correct"]), "n/a"]
            )
    lines += _table(["source", "use", "test rows", "ROC-AUC", "macro-F1", "toxic flagged", "clean kept"], rows)
    lines += [
        "",
        "`use: train` sources report their own test split (never trained on, never used to choose anything);",
        "`use: eval` sources were never trained on at all.",
    ]
    return lines


def _functional_section(functional: dict) -> list[str]:
    held, train = functional["heldout"], functional["train"]
    lines = [
        "## Functional suite",
        "",
        f"Held-out templates: {held['cases']} cases; **{_pct(held['toxic_flagged'])}** of toxic cases flagged, "
        f"**{_pct(held['clean_kept'])}** of clean cases left clean. (Train-half templates, for comparison: "
        f"{_pct(train['toxic_flagged'])} / {_pct(train['clean_kept'])}.)",
        "",
    ]
    rows = []
    for fid, held_f in sorted(held["functionalities"].items(), key=lambda kv: kv[1]["passed"]):
        train_f = train["functionalities"].get(fid, {})
        rows.append(
            [
                fid,
                held_f["label"],
                held_f["description"],
                str(held_f["cases"]),
                _pct(held_f["passed"]),
                _pct(train_f.get("passed")),
            ]
        )
    lines += _table(
        ["functionality", "label", "what it tests", "held-out cases", "held-out pass", "train-half pass"], rows
    )
    lines += ["", "Pass rate per identity group (held-out templates that name a group):", ""]
    lines += _table(["group", "pass"], [[g, _pct(v)] for g, v in held["groups"].items()])
    return lines


def _categories_section(categories: dict) -> list[str]:
    lines = [
        "## Categories",
        "",
        "Each category is a head of its own over the same features, at its own threshold (chosen on the",
        "validation rows of the sources that label it). A source that does not label a category is not",
        "judged on it.",
        "",
    ]
    rows = [[name, c.get("description") or "", f"{c['threshold']:g}"] for name, c in categories.items()]
    lines += _table(["category", "means", "threshold"], rows) + ["", "Held-out figures per source:", ""]
    figures = [(name, source, f) for name, c in categories.items() for source, f in sorted(c["sources"].items())]
    figures += [
        (name, "functional (held-out half)", c["functional"]) for name, c in categories.items() if c.get("functional")
    ]
    rows = [
        [name, source, str(f["rows"]), _num(f.get("roc_auc")), _pct(f.get("flagged")), _pct(f.get("kept"))]
        for name, source, f in figures
    ]
    lines += _table(["category", "source", "rows", "ROC-AUC", "positives flagged", "negatives kept"], rows)
    names = [name for name, c in categories.items() if c.get("functional")]
    if names:
        lines += ["", "Share of each functionality's held-out cases that each category flags:", ""]
        per = {name: categories[name]["functional"]["flagged_per_functionality"] for name in names}
        fids = sorted(per[names[0]])
        lines += _table(["functionality", *names], [[fid, *(_pct(per[n].get(fid)) for n in names)] for fid in fids])
    return lines


def _bias_section(bias: dict) -> list[str]:
    lines = [
        "## Bias per identity group",
        "",
        "Subgroup AUC, BPSN AUC (clean texts naming the group against toxic ones that do not) and BNSP",
        "AUC (toxic texts naming it against clean ones that do not), after Borkan et al. 2019. Groups with",
        "fewer than 50 examples are shown, not judged (marked *).",
        "",
    ]
    for name, result in bias.items():
        what = "pooled test rows of every training source but the functional suite" if name == REAL_HELD_OUT else name
        lines += [
            f"### {name}",
            "",
            f"{result['rows']} rows ({what}). Worst judged BPSN: "
            f"{result['worst_bpsn'][0]} {_num(result['worst_bpsn'][1])}; worst BNSP: "
            f"{result['worst_bnsp'][0]} {_num(result['worst_bnsp'][1])}.",
            "",
        ]
        rows = [
            [
                g + ("" if v["judged"] else " *"),
                str(v["examples"]),
                str(v["toxic"]),
                _num(v["subgroup_auc"]),
                _num(v["bpsn_auc"]),
                _num(v["bnsp_auc"]),
            ]
            for g, v in result["groups"].items()
        ]
        lines += _table(["group", "examples", "toxic", "subgroup AUC", "BPSN AUC", "BNSP AUC"], rows) + [""]
    return lines


def _targets_section(targets: dict) -> list[str]:
    names = {
        "functional_toxic_flagged": "held-out functional suite: toxic cases flagged",
        "functional_clean_kept": "held-out functional suite: clean cases kept",
        "functional_worst": "held-out functional suite: worst functionality",
        "davidson_roc_auc": "Davidson held-out ROC-AUC",
        "worst_bpsn_auc": "worst BPSN AUC over judged groups and sets",
    }
    rows = [
        [names[k], _num(v["value"]), f"≥ {v['target']:g}", {True: "met", False: "**not met**", None: "n/a"}[v["met"]]]
        for k, v in targets.items()
    ]
    return ["## The bar for a servable model", ""] + _table(["measure", "value", "bar", ""], rows)


def _failures_section(evaluation: dict) -> list[str]:
    held = evaluation["functional"]["heldout"]["functionalities"]
    weakest = sorted(held.items(), key=lambda kv: kv[1]["passed"])[:5]
    lines = ["## Known failure modes", ""]
    lines += [f"- **{fid}** ({f['description']}): {_pct(f['passed'])} of held-out cases right." for fid, f in weakest]
    lines += [
        "- It reads words and word pairs, not meaning: sarcasm, implicit hate without telling words, and",
        '  who is quoting whom are beyond it. A missing space inside a word ("womendisgust") hides the word.',
        "- Emoji-based hate (HatemojiBuild) is barely above chance: emoji are tokens, but their meaning is learned",
        "  from too few examples.",
        "- Labels come from sources with different definitions (see the label definition); scores on text unlike",
        "  any source (long-form articles, code, other languages) are not meaningful.",
    ]
    for name, category in (evaluation.get("categories") or {}).items():
        figures = [(f["roc_auc"], source) for source, f in category["sources"].items() if f.get("roc_auc") is not None]
        flagged = category.get("functional", {}).get("flagged_per_functionality", {})
        clean = sorted(((flagged[fid], fid) for fid, f in held.items() if f["label"] == "clean" and fid in flagged))
        line = f"- The **{name}** category"
        if figures:
            auc, source = min(figures)
            line += f" is weakest on {source} (held-out ROC-AUC {auc:.3f})"
        if clean:
            share, fid = clean[-1]
            line += f"{',' if figures else ''} and flags {_pct(share)} of the clean held-out cases of {fid}"
        lines.append(line + ": use it to sort a queue, not to act alone.")
    return lines


def _comparison_section(others: dict[str, dict]) -> list[str]:
    header = [
        "version",
        "Davidson AUC",
        "DynaHate AUC",
        "suite toxic flagged",
        "suite clean kept",
        "worst functionality",
        "worst BPSN (templates)",
        "worst BPSN (real)",
    ]
    rows = []
    for version, evaluation in others.items():
        src, held = evaluation["sources"], evaluation["functional"]["heldout"]
        bias = evaluation["bias"]
        rows.append(
            [
                version,
                _num(src.get("davidson2017", {}).get("test", {}).get("roc_auc")),
                _num(src.get("dynahate2021", {}).get("test", {}).get("roc_auc")),
                _pct(held["toxic_flagged"]),
                _pct(held["clean_kept"]),
                _pct(min(f["passed"] for f in held["functionalities"].values())),
                _num(bias.get("dixon2018", {}).get("worst_bpsn", [None, None])[1]),
                _num(bias.get(REAL_HELD_OUT, {}).get("worst_bpsn", [None, None])[1]),
            ]
        )
    return ["## Versions compared", "", "The same held-out rows for every version:", ""] + _table(header, rows)


def render_card(manifest: dict[str, Any], spec: list[Source], compared: dict[str, dict]) -> str:
    """The card for one version; `compared` maps every evaluated version (this one too) to its evaluation."""
    evaluation = manifest["evaluation"]
    by_name = {source.name: source for source in spec}
    chosen = manifest.get("threshold_source", "given")
    how = (
        "chosen on validation rows to maximise macro-F1, each source weighing the same"
        if chosen == "validation macro-F1"
        else "given at training"
    )
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        "Generated by `batchjob evaluate --version "
        f"{manifest['version']}` on {evaluation['evaluated_at']}; do not edit by hand.",
        "",
        f"- Trained {manifest.get('created_at', 'n/a')} with preset `{manifest.get('preset')}`; "
        f"artifact sha256 `{manifest['sha256'][:16]}…`; served by the data-only scorer (numpy, never unpickled).",
        f"- Threshold **{manifest['threshold']:g}**, {how}.",
        "",
        INTENDED_USE,
        "",
        "## Label definition",
        "",
        LABEL_DEFINITION.read_text(encoding="utf-8").strip(),
        "",
    ]
    lines += _targets_section(evaluation["targets"]) + [""]
    lines += _comparison_section(compared) + [""]
    lines += _sources_section(manifest, by_name) + [""]
    lines += _metrics_section(evaluation) + [""]
    lines += _functional_section(evaluation["functional"]) + [""]
    if evaluation.get("categories"):
        lines += _categories_section(evaluation["categories"]) + [""]
    lines += _bias_section(evaluation["bias"])
    lines += _failures_section(evaluation) + [""]
    return "\n".join(lines)


def write_card(directory: Path, text: str, write_atomic) -> Path:
    path = Path(directory) / CARD_FILE
    write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
