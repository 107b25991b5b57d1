"""`batchjob`: the click entry point. Commands parse options and delegate to shared_features.

Exit codes (cron and CI act on them): 0 success; 1 the job failed (one-line error on stderr,
traceback only with --debug); 2 usage error; 3 reject rate above --max-reject-rate.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from shared_features import PRESETS, ModelRegistry, ToxiserveError, resolve_params
from shared_features.artifacts import VERSION_POLICIES
from shared_features.dataset import FORMATS, read_labeled
from shared_features.registry import DEFAULT_MODEL_ROOT
from shared_features.training import train_model

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TOO_MANY_REJECTS = 0, 1, 2, 3


@dataclass
class JobContext:
    model_dir: Path
    on_version_mismatch: str
    debug: bool

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.model_dir, self.on_version_mismatch)


class JobGroup(click.Group):
    """Maps our error hierarchy to exit code 1 with a one-line message instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ToxiserveError, OSError) as exc:
            if ctx.obj is not None and ctx.obj.debug:
                raise
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


@click.group(cls=JobGroup, epilog=__doc__.split("\n\n", 1)[1])
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_MODEL_ROOT,
    show_default=True,
    envvar="TOXISERVE_MODEL_DIR",
    help="Root of the versioned model artifacts.",
)
@click.option(
    "--on-version-mismatch",
    type=click.Choice(VERSION_POLICIES),
    default="error",
    show_default=True,
    envvar="TOXISERVE_ON_VERSION_MISMATCH",
    help="Refuse or only warn when a model was trained with other library versions.",
)
@click.option("--debug", is_flag=True, envvar="TOXISERVE_DEBUG", help="Show tracebacks on failure.")
@click.pass_context
def cli(ctx: click.Context, model_dir: Path, on_version_mismatch: str, debug: bool) -> None:
    """Train and run offline jobs with the same pipeline the service uses."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = JobContext(model_dir=model_dir, on_version_mismatch=on_version_mismatch, debug=debug)


def _parse_threshold(ctx, param, value: str) -> float | None:
    if value == "auto":
        return None
    try:
        threshold = float(value)
    except ValueError:
        raise click.BadParameter("a number in (0, 1) or 'auto'") from None
    if not 0 < threshold < 1:
        raise click.BadParameter("a number in (0, 1) or 'auto'")
    return threshold


def _parse_params(ctx, param, value: str | None) -> dict | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise click.BadParameter('expected {"vectorizer": {...}, "classifier": {...}}')
    return parsed


@cli.command()
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="TOXISERVE_TRAIN_DATA",
    help="Labeled CSV or Parquet file.",
)
@click.option("--name", required=True, help="Model name (a directory under the model root).")
@click.option("--version", "version", required=True, help="Model version, e.g. v3; artifacts are immutable.")
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="word-ngrams",
    show_default=True,
    help="Named pipeline parameters.",
)
@click.option("--params", callback=_parse_params, help='JSON overrides, e.g. \'{"classifier": {"C": 2}}\'.')
@click.option(
    "--threshold",
    default="0.5",
    show_default=True,
    callback=_parse_threshold,
    help="Decision threshold, or 'auto' to choose it on the validation split.",
)
@click.option("--text-column", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-column", default="label", show_default=True, help="Column holding 0/1 labels.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: from the extension).")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write <name>/<version>/ (default: the model root).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing version.")
@click.pass_obj
def train(
    job: JobContext,
    data_path,
    name,
    version,
    preset,
    params,
    threshold,
    text_column,
    label_column,
    fmt,
    output_dir,
    force,
) -> None:
    """Train a model from labeled data and write a versioned artifact with its manifest."""
    output_root = output_dir or job.model_dir
    target = output_root / name / version
    if target.exists() and not force:
        raise click.UsageError(f"{target} exists; versions are immutable (pass --force to overwrite)")
    try:
        resolved = resolve_params(preset, params)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--params") from None
    data = read_labeled(data_path, text_column, label_column, fmt)
    manifest = train_model(data, name, version, resolved, output_root, threshold=threshold, preset=preset)
    summary = {key: manifest[key] for key in ("name", "version", "threshold", "sha256", "size_bytes")}
    summary["path"] = str(target)
    summary["test_metrics"] = manifest["metrics"]["test"]
    click.echo(json.dumps(summary, indent=2))


def main() -> None:
    # standalone_mode keeps click's exit codes: 2 for usage errors, 1 for ClickException.
    cli(prog_name="batchjob")


if __name__ == "__main__":
    sys.exit(main())
