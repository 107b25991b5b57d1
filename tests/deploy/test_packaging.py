"""Packaging by use, from a wheel in fresh virtualenvs (no checkout on the path): the service alone
brings no training library and serves the shipped models; the batch extra scores a file; the bare
install is the client and the operator CLI, without Flask or numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.service.server import free_port, wait_ready

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
TRAINING_LIBRARIES = {"scikit-learn", "scipy", "pandas", "pyarrow", "joblib"}
KEY = "pkg-key-0123456789abc"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("toxiserve-*.whl")
    return found


def fresh_venv(path: Path, requirement: str) -> Path:
    """A new virtualenv with `requirement` installed under the project's constraints; its bin/."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    installed = subprocess.run(
        [str(path / "bin" / "pip"), "install", "--quiet", "-c", str(CONSTRAINTS), requirement],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return path / "bin"


def distributions(bin_dir: Path) -> set[str]:
    listed = subprocess.run([str(bin_dir / "pip"), "list", "--format", "json"], capture_output=True, text=True)
    return {item["name"].lower() for item in json.loads(listed.stdout)}


def isolated() -> dict[str, str]:
    """An environment that cannot point at the checkout: no TOXISERVE_* or PYTHON* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("TOXISERVE_", "PYTHON"))}


def test_the_service_extra_serves_the_shipped_models_without_training_libraries(wheel, tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv", f"{wheel}[serve]")
    installed = distributions(bin_dir)
    assert {"flask", "gunicorn", "numpy"} <= installed
    assert installed & TRAINING_LIBRARIES == set(), installed & TRAINING_LIBRARIES
    share = tmp_path / "venv" / "share" / "toxiserve"
    port, cwd = free_port(), tmp_path / "elsewhere"
    cwd.mkdir()
    env = isolated() | {
        "TOXISERVE_API_KEYS": f"pkg:{KEY}",
        "TOXISERVE_BIND_HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "TOXISERVE_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
    }
    command = [str(bin_dir / "gunicorn"), "-c", str(share / "gunicorn.conf.py"), "service:create_app()"]
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as server:
        try:
            url = f"http://127.0.0.1:{port}"

            def check_alive():
                assert server.poll() is None, server.stderr.read().decode()[-3000:]

            ready = wait_ready(url, check_alive)
            assert ready["status"] == "ready" and set(ready["models"]) == {"v2", "v3"}
            answer = requests.post(
                f"{url}/v1/models/v3/predict", json={"text": "you stupid idiot"}, headers={"X-API-Key": KEY}, timeout=10
            ).json()
        finally:
            server.terminate()
            server.wait(timeout=30)
    from shared_features.registry import ModelRegistry

    local = ModelRegistry().load("toxicity", "v3")
    assert answer["score"] == pytest.approx(float(local.score(["you stupid idiot"])[0]), abs=1e-12)


def test_the_batch_extra_scores_a_file_from_the_wheel(wheel, tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv", f"{wheel}[batch]")
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("text\nhave a lovely day\nyou stupid idiot\n")
    scored = subprocess.run(
        [str(bin_dir / "batchjob"), "score", str(source), "--output", str(output), "--model-version", "v3"],
        cwd=tmp_path,
        env=isolated(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    summary = json.loads(scored.stdout)
    shipped = json.loads((ROOT / "models" / "toxicity" / "v3" / "manifest.json").read_text())
    assert summary["rows_scored"] == 2 and summary["model"]["sha256"] == shipped["sha256"]
    assert "flask" not in distributions(bin_dir)


def test_the_bare_install_is_the_client_and_operator_cli(wheel, tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv", str(wheel))
    installed = distributions(bin_dir)
    assert {"requests", "click"} <= installed and installed & {"flask", "numpy", "gunicorn"} == set()
    for program in (["toxiserve", "--version"], ["python", "-c", "import toxiserve.client"]):
        ran = subprocess.run([str(bin_dir / program[0]), *program[1:]], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
