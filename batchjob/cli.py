"""`batchjob`: the click entry point. Commands parse options and delegate to shared_features.

Exit codes (cron and CI act on them): 0 success; 1 the job failed (one-line error on stderr,
traceback only with --debug); 2 usage error; 3 reject rate above --max-reject-rate (score);
4 drift above the threshold, 5 too few scorable rows to tell (drift --fail-on-drift).
"""

# Heavy libraries (scikit-learn, pandas, pyarrow, even numpy) are imported inside the commands
# that use them: `batchjob --help` and a usage error cost click and nothing more.

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from shared_features.errors import ToxiserveError
from shared_features.layout import DATA_FORMATS, DEFAULT_MODEL_ROOT, VERSION_POLICIES
from shared_features.presets import PRESETS, resolve_params
from shared_features.text import MAX_TEXT_CHARS

from .options import model_version_option
from .progress import data_root_option, stage

DEFAULT_PSI_THRESHOLD = 0.2  # shared_features.drift's; a test holds them equal

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TOO_MANY_REJECTS, EXIT_DRIFTED, EXIT_INSUFFICIENT = 0, 1, 2, 3, 4, 5


@dataclass
class JobContext:
    model_dir: Path
    on_version_mismatch: str
    debug: bool

    def registry(self):
        from shared_features.registry import ModelRegistry

        return ModelRegistry(self.model_dir, self.on_version_mismatch)


class JobGroup(click.Group):
    """Maps our error hierarchy to exit code 1 with a one-line message instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ToxiserveError, OSError) as exc:  # JobInterrupted (a signal) is one too
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
# The package's version here; a subcommand's --model-version (once --version) names a model version.
@click.version_option(package_name="toxiserve", prog_name="batchjob")
@click.pass_context
def cli(ctx: click.Context, model_dir: Path, on_version_mismatch: str, debug: bool) -> None:
    """Train and run offline jobs with the same pipeline the service uses."""
    # Logs and progress on stderr: stdout carries only the JSON result, for scripts to parse.
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO chatter is not ours
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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


def _parse_label_values(ctx, param, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    values = tuple(part.strip() for part in value.split(",") if part.strip())
    if not values:
        raise click.BadParameter("one or more label values, comma-separated")
    return values


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
    "data_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="TOXISERVE_TRAIN_DATA",
    help="Labeled CSV or Parquet file; repeat it for several sources (each gets its own seeded split).",
)
@click.option(
    "--data-spec",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON spec of several sources (columns, label mapping, split column, weight, cap per source), "
    "e.g. models/toxicity/sources.json. Instead of --data.",
)
@data_root_option
@click.option("--name", required=True, help="Model name (a directory under the model root).")
@model_version_option("Model version, e.g. v3; artifacts are immutable.")
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
@click.option("--text-column", default="text", show_default=True, help="Column holding the text (--data).")
@click.option("--label-column", default="label", show_default=True, help="Column holding the labels (--data).")
@click.option(
    "--positive-labels",
    callback=_parse_label_values,
    help="Label values that mean toxic, comma-separated; every other value means clean. Without it the "
    "label column must hold 0 and 1. Upstream labeled_data.csv: --text-column tweet --label-column class "
    "--positive-labels 0,1 (hate speech, offensive).",
)
@click.option("--format", "fmt", type=click.Choice(DATA_FORMATS), help="Input format (default: from the extension).")
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model root to write <name>/<version>/ under (the shipped models: --output-dir models).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing version.")
@click.pass_obj
def train(
    job: JobContext,
    data_paths,
    data_spec,
    data_root,
    name,
    version,
    preset,
    params,
    threshold,
    text_column,
    label_column,
    positive_labels,
    fmt,
    output_dir,
    force,
) -> None:
    """Train a model from labeled data and write a versioned artifact with its manifest.

    One or more --data files, or a --data-spec of several sources. Each source keeps its own
    held-out split; no training row equals another source's evaluation row. The artifact holds the
    data-only scorer the service loads (checked against predict_proba on every held-out row to
    1e-12, or nothing is written) and the pickled pipeline. Progress goes to stderr.
    """
    from shared_features.training import as_source_data, train_sources

    if bool(data_paths) == bool(data_spec):
        raise click.UsageError("give --data (one or more files) or --data-spec, not both and not neither")
    target = output_dir / name / version
    if target.exists() and not force:
        raise click.UsageError(f"{target} exists; versions are immutable (pass --force to overwrite)")
    try:
        resolved = resolve_params(preset, params)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--params") from None
    if data_spec:
        from shared_features.sources import load_spec

        datas = load_spec(data_spec, data_root, stage)
    else:
        from shared_features.dataset import read_labeled

        if len({path.name for path in data_paths}) != len(data_paths):
            raise click.UsageError("each --data file needs its own file name (sources are named by it)")
        datas = [as_source_data(read_labeled(p, text_column, label_column, fmt, positive_labels)) for p in data_paths]
    manifest = train_sources(datas, name, version, resolved, output_dir, threshold, preset, progress=stage)
    summary = {key: manifest[key] for key in ("name", "version", "threshold", "sha256", "size_bytes")}
    summary["path"] = str(target)
    summary["test_metrics"] = manifest["metrics"]["test"]
    click.echo(json.dumps(summary, indent=2))


@cli.command()
@click.option("--name", default="toxicity", show_default=True, help="Model name.")
@model_version_option("Model version to add a data-only scorer to.")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or Parquet texts to check the scorer on (the training data covers its validation split).",
)
@click.option("--text-column", default="text", show_default=True, help="Column holding the text.")
@click.option("--format", "fmt", type=click.Choice(DATA_FORMATS), help="Input format (default: from the extension).")
@click.pass_obj
def export(job: JobContext, name, version, data_path, text_column, fmt) -> None:
    """Write the data-only scorer (scorer.json + scorer.npz) for an artifact that has only its pickle.

    The pickle is loaded (verified by its sha256), converted, and the scorer must reproduce
    predict_proba to 1e-12 on every text of --data before the manifest names it. Serving then loads
    the scorer and never the pickle.
    """
    from shared_features.artifacts import export_data_only
    from shared_features.dataset import read_texts

    directory = job.registry().path(name, version)
    texts = read_texts(data_path, text_column, fmt)
    manifest = export_data_only(directory, texts, job.on_version_mismatch)
    click.echo(json.dumps({"path": str(directory), **manifest["data_only"]}, indent=2))


def input_options(command):
    """The input and model options `score` and `drift` share (so they can never drift apart)."""
    options = [
        click.argument("input_path", metavar="INPUT"),
        click.option(
            "--model", default="toxicity", show_default=True, envvar="TOXISERVE_MODEL_NAME", help="Model name."
        ),
        model_version_option("Model version.", default="v1"),
        click.option("--text-column", default="text", show_default=True, help="Column holding the text."),
        click.option(
            "--format",
            "input_format",
            type=click.Choice(DATA_FORMATS),
            help="Input format (default: from the extension).",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=1),
            default=20_000,
            show_default=True,
            help="Rows per chunk: peak memory follows this, not the file size.",
        ),
        click.option(
            "--max-text-chars",
            type=click.IntRange(min=1),
            default=MAX_TEXT_CHARS,
            show_default=True,
            help="Longer texts are rejected, as the service refuses them.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@input_options
@click.option("--output", "output", required=True, help="Output .csv or .parquet (a directory with --engine dask).")
@click.option("--output-format", type=click.Choice(DATA_FORMATS), help="Output format (default: extension).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="all cores",
    help="Scoring processes (local engine) or Dask workers of a local cluster.",
)
@click.option("--rejects", help="Where unscorable rows go (default: OUTPUT's name + .rejects).")
@click.option(
    "--max-reject-rate",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help="Exit 3 when rows_rejected / rows_in is above this.",
)
@click.option("--summary", "summary_path", help="Also write the JSON summary to this path.")
@click.option("--keep-text", is_flag=True, help="Keep the text column in the output.")
@click.option(
    "--explain",
    "explain",
    type=click.IntRange(0, 50),
    default=0,
    metavar="K",
    help="Add an explanation column: each row's K largest contributions to its score as JSON, with their "
    "spans in the row's text (0: none).",
)
@click.option(
    "--output-prefix",
    default="",
    help="Before the names of the added columns (score, label, model_version; row_number, reason in the rejects), "
    "for an input that already has such columns, e.g. pred_.",
)
@click.option(
    "--escape-formulas/--no-escape-formulas",
    default=True,
    show_default=True,
    help="CSV output: prefix cells starting with = + - @ (not signed numbers) with ' so spreadsheets "
    "don't run them as formulas.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="local: processes on this machine; dask: a dask.distributed cluster (pip install .[dask]).",
)
@click.option("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (default: a local cluster).")
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between progress log lines when stderr is not a terminal.",
)
@click.pass_obj
def score(
    job: JobContext,
    input_path,
    output,
    model,
    version,
    text_column,
    input_format,
    output_format,
    chunk_size,
    workers,
    rejects,
    max_reject_rate,
    max_text_chars,
    summary_path,
    keep_text,
    explain,
    output_prefix,
    escape_formulas,
    engine,
    scheduler,
    progress_interval,
) -> None:
    """Score a CSV or Parquet INPUT (Parquet: a file, directory or glob) into OUTPUT.

    Every input row ends up in OUTPUT (with score, label, model_version, and score_<category> for
    each category of a model that has them) or in the rejects file (with its 0-based row_number and
    a reason): rows_in == rows_scored + rows_rejected. OUTPUT appears only when complete. The JSON
    summary goes to stdout.
    """
    if scheduler and engine != "dask":
        raise click.UsageError("--scheduler needs --engine dask")
    from .io import detect_format
    from .scoring import ScoreJob, run_local, write_summary

    spec = ScoreJob(
        input=input_path,
        output=output,
        model_dir=job.model_dir,
        model=model,
        version=version,
        text_column=text_column,
        input_format=input_format,
        output_format=output_format,
        chunk_size=chunk_size,
        workers=workers,
        rejects=rejects,
        keep_text=keep_text,
        output_prefix=output_prefix,
        escape_formulas=escape_formulas,
        max_chars=max_text_chars,
        on_version_mismatch=job.on_version_mismatch,
        explain=explain,
    )
    if engine == "dask":
        if detect_format(input_path, input_format) != "parquet":
            raise click.UsageError("--engine dask reads Parquet; convert the CSV first (or use --engine local)")
        try:
            from .dask_engine import run_dask
        except ImportError:
            raise click.UsageError("--engine dask needs the dask extra: pip install '.[dask]'") from None
        result = run_dask(spec, scheduler)
    else:
        result = run_local(spec, progress_interval=progress_interval)
    click.echo(json.dumps(result, indent=2))
    if summary_path:
        write_summary(result, summary_path)
    rate = result["rows_rejected"] / result["rows_in"] if result["rows_in"] else 0.0  # exact, not rounded
    if rate > max_reject_rate:
        click.echo(f"Error: reject rate {rate:.6g} is above --max-reject-rate {max_reject_rate:g}", err=True)
        raise SystemExit(EXIT_TOO_MANY_REJECTS)


@cli.command()
@input_options
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_PSI_THRESHOLD,
    show_default=True,
    help="PSI above which a feature counts as drifted.",
)
@click.option(
    "--fail-on-drift",
    is_flag=True,
    help="Exit 4 when any feature drifted, 5 when too few rows could be scored to tell (status insufficient).",
)
@click.pass_obj
def drift(
    job: JobContext,
    input_path,
    model,
    version,
    text_column,
    input_format,
    chunk_size,
    threshold,
    max_text_chars,
    fail_on_drift,
) -> None:
    """Drift report for a CSV/Parquet INPUT against the model's training profile (PSI per feature).

    The same report as the service's GET /v1/models/<version>/drift, for a file.
    """
    from shared_features.batch import check_columns
    from shared_features.drift import drift_report, profile_counts

    from .io import open_input

    loaded = job.registry().load(model, version)
    if "reference_profile" not in loaded.manifest:
        raise click.ClickException(f"model {model}/{version} has no reference profile; retrain it to add one")
    totals, unscorable, rows = None, 0, 0
    for table in open_input(input_path, input_format, chunk_size).chunks():
        check_columns(table.schema, text_column, keep_text=True)
        counts, skipped = profile_counts(loaded, table.column(text_column).to_pylist(), max_text_chars)
        totals = counts if totals is None else {k: totals[k] + counts[k] for k in totals}
        unscorable += skipped
        rows += table.num_rows
    report = drift_report(
        loaded.manifest["reference_profile"], {k: v.tolist() for k, v in (totals or {}).items()}, threshold
    )
    click.echo(
        json.dumps(
            {
                "model_version": version,
                "available": True,
                "input": input_path,
                "rows_in": rows,
                "rows_unscorable": unscorable,
                **report,
            },
            indent=2,
        )
    )
    if report["status"] == "insufficient":
        click.echo(
            f"batchjob drift: {report['samples']} scorable rows, fewer than the {report['min_samples']} a PSI needs: "
            "the sample is too small to tell whether the input drifted",
            err=True,
        )
        if fail_on_drift:
            raise SystemExit(EXIT_INSUFFICIENT)
    if fail_on_drift and report["drifted"]:
        raise SystemExit(EXIT_DRIFTED)


from .evaluate_cmd import evaluate  # noqa: E402 - registered on the group defined above

cli.add_command(evaluate)


def main() -> None:
    # standalone_mode keeps click's exit codes: 2 for usage errors, 1 for ClickException.
    cli(prog_name="batchjob")


if __name__ == "__main__":
    sys.exit(main())
