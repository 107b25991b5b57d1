"""Compare model families on validation data only: the evidence behind the choice of v3's family.

    python -m bench.model_families --family linear --family 'linear:{"C": 4}' --family mlp:64:1e-4:5

Each family is fitted on the training rows of a data spec (the same rows, weights and de-duplication
as `batchjob train`), then judged on what model selection may see: every source's validation rows
(ROC-AUC) and the validation templates of the functional suite's train half (toxic flagged, clean
kept, worst functionality), at the threshold chosen on the pooled validation rows as training
chooses it. Test splits and the suite's held-out half are never read, so comparing families here
cannot tune a model on its test data.

Families:
- `linear[:JSON]`: the preset's pipeline (v3's `robust-words`), JSON overriding classifier keys;
- `mlp:HIDDEN:ALPHA:EPOCHS`: the preset's TF-IDF features into one ReLU layer (scikit-learn's
  MLPClassifier; a data-only numpy scorer could serve it at about the linear cost).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from shared_features.evaluation import choose_threshold
from shared_features.functional import generate, is_validation_template
from shared_features.pipeline import build_pipeline
from shared_features.presets import resolve_params
from shared_features.sources import load_spec
from shared_features.training import SEED, evaluation_keys, training_rows

from .common import REPO

DEFAULT_SPEC = REPO / "models" / "toxicity" / "sources.json"
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
SUITE = "functional"


def parse_family(family: str) -> tuple[str, dict | tuple[int, float, int]]:
    """`linear[:JSON]` -> ("linear", classifier keys); `mlp:H:ALPHA:EPOCHS` -> ("mlp", (H, ALPHA, EPOCHS))."""
    kind, _, options = family.partition(":")
    try:
        if kind == "linear":
            keys = json.loads(options) if options else {}
            if isinstance(keys, dict):
                return kind, keys
        elif kind == "mlp":
            hidden, alpha, epochs = options.split(":")
            return kind, (int(hidden), float(alpha), int(epochs))
    except ValueError:
        pass
    raise SystemExit(f"unknown family {family!r}: use linear[:JSON object] or mlp:HIDDEN:ALPHA:EPOCHS")


def fit_family(family: tuple[str, dict | tuple], preset: str, texts: list[str], labels: np.ndarray, weights):
    """A fitted object with predict_proba over raw texts, for one parsed family."""
    kind, options = family
    params = resolve_params(preset)
    if kind == "linear":
        params["classifier"].update(options)
        return build_pipeline(params).fit(texts, labels, clf__sample_weight=weights)
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    hidden, alpha, epochs = options
    features = build_pipeline(params)[:-1]
    network = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, max_iter=epochs, batch_size=256, random_state=0)
    # The linear preset balances classes inside the classifier; here the weights carry it.
    balance = np.where(labels == 1, len(labels) / (2 * labels.sum()), len(labels) / (2 * (labels == 0).sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs on purpose: "did not converge" is expected
        x = features.fit_transform(texts)
        network.fit(x, labels, sample_weight=weights * balance)
    return Pipeline([*features.steps, ("clf", network)])


def judge(model, validation: dict[str, tuple[list[str], np.ndarray]], functionality: list[str]) -> dict:
    """Validation ROC-AUC per source, and the suite's validation templates at the chosen threshold."""
    from sklearn.metrics import roc_auc_score

    scores = {name: model.predict_proba(texts)[:, 1] for name, (texts, _) in validation.items()}
    labels = [validation[name][1] for name in scores]
    weights = [np.full(len(y), 1.0 / len(y)) for y in labels]  # each source weighs the same, as in training
    threshold = choose_threshold(
        np.concatenate(labels), np.concatenate(list(scores.values())), sample_weight=np.concatenate(weights)
    )
    aucs = {
        name: round(float(roc_auc_score(y, scores[name])), 3)
        for name, (_, y) in validation.items()
        if name != SUITE and len(np.unique(y)) == 2
    }
    result = {"threshold": threshold, "auc": aucs}
    if SUITE in validation:
        y = validation[SUITE][1]
        passed = (scores[SUITE] >= threshold) == (y == 1)
        by_functionality = defaultdict(list)
        for name, ok in zip(functionality, passed, strict=True):
            by_functionality[name].append(ok)
        worst = min(by_functionality, key=lambda name: np.mean(by_functionality[name]))
        result |= {
            "flagged": float(passed[y == 1].mean()),
            "kept": float(passed[y == 0].mean()),
            "worst": (worst, float(np.mean(by_functionality[worst]))),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="append", required=True, help="linear[:JSON] or mlp:HIDDEN:ALPHA:EPOCHS")
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--preset", default="robust-words")
    args = parser.parse_args(argv)
    families = {family: parse_family(family) for family in args.family}  # refused before any data is read

    datas = load_spec(args.spec, args.data_root)
    texts, labels, weights, _, _ = training_rows(datas, evaluation_keys(datas), SEED)
    validation = {d.source.name: d.part("validation") for d in datas if d.source.use == "train"}
    validation = {name: part for name, part in validation.items() if len(part[0])}
    # The suite's validation rows, in the order its source lists them (train half, validation templates).
    functionality = [c.functionality for c in generate("train") if is_validation_template(c.template)]

    print(
        f"{len(texts)} training rows; validation rows: {', '.join(f'{n} {len(p[0])}' for n, p in validation.items())}"
    )
    print("\n| family | fit s | threshold | suite toxic flagged | suite clean kept | worst functionality | ROC-AUC |")
    print("|---|---|---|---|---|---|---|")
    for family, parsed in families.items():
        started = time.perf_counter()
        model = fit_family(parsed, args.preset, texts, labels, weights)
        seconds = time.perf_counter() - started
        found = judge(model, validation, functionality)
        suite = ("n/a",) * 3
        if "flagged" in found:
            worst_name, worst_pass = found["worst"]
            suite = (f"{found['flagged']:.3f}", f"{found['kept']:.3f}", f"{worst_name} {worst_pass:.2f}")
        aucs = ", ".join(f"{name} {auc}" for name, auc in found["auc"].items())
        print(f"| `{family}` | {seconds:.0f} | {found['threshold']:.2f} | {' | '.join(suite)} | {aucs} |", flush=True)


if __name__ == "__main__":
    main()
