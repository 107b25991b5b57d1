"""`batchjob evaluate`: every figure of a model card, computed on held-out data, written to the
version's manifest (`evaluation`) and to its MODEL_CARD.md."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shared_features.layout import DEFAULT_MODEL_ROOT

from .options import model_version_option
from .progress import data_root_option, stage


@click.command()
@click.option("--name", default="toxicity", show_default=True, help="Model name.")
@model_version_option("Model version to evaluate, e.g. v3.")
@click.option(
    "--data-spec",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sources to evaluate on (default: <model dir>/<name>/sources.json, the same for every version, "
    "so the cards compare).",
)
@data_root_option
@click.option("--card/--no-card", default=True, show_default=True, help="Write MODEL_CARD.md beside the manifest.")
@click.pass_obj
def evaluate(job, name: str, version: str, data_spec: Path | None, data_root: Path | None, card: bool) -> None:
    """Evaluate a model version: per-source held-out metrics, the functional suite per
    functionality (its held-out templates), and bias per identity group (subgroup, BPSN, BNSP AUC).

    Writes the figures into the version's manifest under `evaluation` and regenerates its
    MODEL_CARD.md, which compares every evaluated version of the model. The JSON of the bar
    (targets met or not) goes to stdout; progress to stderr.
    """
    from shared_features.artifacts import read_manifest, update_manifest, write_atomic
    from shared_features.model_card import render_card, write_card
    from shared_features.model_eval import evaluate_model
    from shared_features.sources import load_spec, read_spec

    registry = job.registry()
    directory = registry.path(name, version)
    spec_path = data_spec or Path(job.model_dir) / name / "sources.json"
    if not spec_path.is_file():
        spec_path = DEFAULT_MODEL_ROOT / name / "sources.json"
    model = registry.load(name, version)
    datas = load_spec(spec_path, data_root, stage)
    evaluation = evaluate_model(model, datas, stage)
    manifest = update_manifest(directory, {"evaluation": evaluation})
    if card:
        compared = {}
        for other in registry.versions(name):
            other_manifest = manifest if other == version else read_manifest(registry.path(name, other))
            if "evaluation" in other_manifest:
                compared[other] = other_manifest["evaluation"]
        path = write_card(directory, render_card(manifest, read_spec(spec_path), compared), write_atomic)
        stage(f"wrote {path}")
    click.echo(json.dumps({"name": name, "version": version, "targets": evaluation["targets"]}, indent=2))
