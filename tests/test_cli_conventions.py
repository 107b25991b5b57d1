"""Both command lines follow the field's conventions: `--version`, and `python -m <package>`."""

import subprocess
import sys
from importlib.metadata import version

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


def test_a_subcommands_version_option_still_names_a_model_version():
    # `batchjob --version` is the package's; `batchjob score --version v3` keeps naming the model.
    result = CliRunner().invoke(batchjob_cli, ["score", "--help"])
    assert result.exit_code == 0 and "--version" in result.output and "Model version" in result.output
