"""The layers of service/ (setup.cfg's import-linter contracts): they hold on the tree, and an import
that runs upward breaks them, so the check is not one that cannot fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (the dev extra)")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # The packages are found on sys.path: the copy's own folder first, so it is the copy that is read.
    env = {**os.environ, "PYTHONPATH": str(root)}
    config = root / "setup.cfg"
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=root, env=env, capture_output=True, text=True
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("service", "shared_features", "batchjob", "toxiserve", "bench", "tests"):
        shutil.copytree(REPO_ROOT / package, root / package, ignore=ignore)
    shutil.copy(REPO_ROOT / "setup.cfg", root / "setup.cfg")
    return root


def test_every_contract_holds_on_the_tree():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import", "contract"),
    [
        ("service/observability/metrics.py", "from service.core import state", "service/ in layers"),
        ("service/store/base.py", "from service.admission import auth", "service/ in layers"),
        ("service/admission/auth.py", "from service.rollout import plan", "service/ in layers"),
        ("service/http/views/health.py", "from service.grpc import server", "the HTTP and gRPC edges never import"),
        ("toxiserve/client.py", "import numpy", "the client and the operator CLI import nothing"),
    ],
)
def test_an_upward_import_breaks_the_build(tmp_path, module, upward_import, contract):
    root = copy_of_the_tree(tmp_path)
    target = root / module
    target.write_text(target.read_text() + f"\n{upward_import}  # deliberately upward\n")
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    report = " ".join(result.stdout.split())  # import-linter wraps long contract names
    assert f"{contract}" in report and "BROKEN" in report, result.stdout
    kept_or_broken = report.split(contract, 1)[1].split(" KEPT", 1)[0]
    assert "BROKEN" in kept_or_broken, f"{contract!r} was not the contract that broke: {result.stdout}"
    assert module.removesuffix(".py").replace("/", ".") in result.stdout
