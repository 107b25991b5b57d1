"""Both command lines follow the field's conventions: `--version`, and `python -m <package>`."""

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchjob.cli import cli as batchjob_cli
from toxiserve.cli import cli as toxiserve_cli

INSTALLED = version("toxiserve")


@pytest.mark.parametrize(("command", "name"), [(batchjob_cli, "batchjob"), (toxiserve_cli, "toxiserve")])
def test_version_names_the_installed_package(command, name):
    result = CliRunner().invoke(command, ["--version"], prog_name=name)
    assert result.exit_code == 0 and result.output == f"{name}, version {INSTALLED}\n"


@pytest.mark.parametrize("package", ["batchjob", "toxiserve"])
def test_python_dash_m_runs_each_cli(package):
    shown = subprocess.run(
        [sys.executable, "-m", package, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0 and shown.stdout == f"{package}, version {INSTALLED}\n", shown.stderr


def test_model_version_has_its_own_name_and_the_old_spelling_still_works(tmp_path):
    # `batchjob --version` is the package's; `--model-version` names the model, and `--version`
    # after a subcommand keeps working with a note on stderr.
    shown = CliRunner().invoke(batchjob_cli, ["score", "--help"])
    assert shown.exit_code == 0 and "--model-version VERSION" in shown.output and "Deprecated" in shown.output
    source = tmp_path / "in.csv"
    source.write_text("text\nhave a lovely day\nyou stupid idiot\n")
    runs = {}
    for spelling in ("--model-version", "--version"):
        output = tmp_path / f"out{spelling}.csv"
        runs[spelling] = subprocess.run(
            [sys.executable, "-m", "batchjob", "score", str(source), "--output", str(output), spelling, "v2"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert runs[spelling].returncode == 0, runs[spelling].stderr
        assert output.read_text().count(',"v2"') == 2
    assert "deprecated; use --model-version" in runs["--version"].stderr
    assert "deprecated" not in runs["--model-version"].stderr
    both = CliRunner().invoke(batchjob_cli, ["drift", str(source), "--model-version", "v2", "--version", "v3"])
    assert both.exit_code == 2 and "name different versions" in both.output


@pytest.mark.parametrize("name", ["batchjob", "toxiserve"])
def test_shell_completion_is_what_the_docs_say(name):
    env = {**os.environ, f"_{name.upper()}_COMPLETE": "bash_source"}
    shown = subprocess.run(
        [str(Path(sys.executable).parent / name)], capture_output=True, text=True, env=env, timeout=60
    )
    assert shown.returncode == 0 and f"_{name}_completion()" in shown.stdout
