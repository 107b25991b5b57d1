"""`--model-version`: the model version a subcommand works on.

It was `--version`, which every command line in the field keeps for the program's own version
(`batchjob --version` now prints it). The old spelling after a subcommand still works, with a
deprecation note on stderr, so scripts keep running while they move.
"""

from __future__ import annotations

import functools

import click


def model_version_option(help_text: str, default: str | None = None):
    """`--model-version` (and the deprecated `--version`), passed to the command as `version`."""

    def decorate(command):
        @functools.wraps(command)
        def merged(*args, model_version: str | None, legacy_version: str | None, **kwargs):
            if legacy_version is not None:
                click.echo("note: --version after a command is deprecated; use --model-version", err=True)
                if model_version is not None and model_version != legacy_version:
                    raise click.UsageError("--model-version and --version name different versions")
            version = model_version or legacy_version or default
            if version is None:
                raise click.UsageError("Missing option '--model-version'.")
            return command(*args, version=version, **kwargs)

        merged = click.option(
            "--version", "legacy_version", metavar="VERSION", help="Deprecated spelling of --model-version."
        )(merged)
        shown = f"{help_text}  [default: {default}]" if default else f"{help_text}  [required]"
        return click.option("--model-version", "model_version", metavar="VERSION", help=shown)(merged)

    return decorate
