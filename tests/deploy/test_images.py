"""The images deploy/docker/build.sh builds (toxiserve:serve, :grpc, :batch), run as users run
them: host network on 127.0.0.1, a read-only root file system, a volume at the state directory, a
numeric non-root user. They skip with a reason where no Docker engine runs or the images are not
built (.ci/run installs docker.io and debootstrap, starts dockerd and runs build.sh)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.service.server import free_port, wait_ready

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DOCKER = shutil.which("docker")
IMAGES = ("toxiserve:serve", "toxiserve:grpc", "toxiserve:batch")
TRAINING_LIBRARIES = {"scikit-learn", "scipy", "pandas", "pyarrow", "joblib"}
KEY = "img-key-0123456789abcd"
TEXT = "you stupid idiot"


def _docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr[-2000:]}"
    return done


def _why_not() -> str | None:
    if DOCKER is None:
        return "no docker client (Debian package docker.io; .ci/run installs it)"
    if subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode != 0:
        return "no Docker engine runs here (dockerd; .ci/run starts it where it can)"
    missing = [i for i in IMAGES if subprocess.run([DOCKER, "image", "inspect", i], capture_output=True).returncode]
    if missing:
        return f"{', '.join(missing)} not built: run deploy/docker/build.sh (.ci/run does)"
    return None


REASON = _why_not() if DOCKER else "no docker client (Debian package docker.io; .ci/run installs it)"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def local_score(version: str, text: str) -> float:
    from shared_features.registry import ModelRegistry

    return float(ModelRegistry().load("toxicity", version).score([text])[0])


def venv_bytes(image: str) -> int:
    return int(_docker("run", "--rm", image, "du", "-sb", "/opt/venv").stdout.split()[0])


@pytest.fixture
def volume():
    name = f"toxiserve-test-{uuid.uuid4().hex[:8]}"
    _docker("volume", "create", name)
    yield name
    _docker("volume", "rm", "-f", name, check=False)


def test_the_serving_image_holds_no_training_library_and_is_small():
    listed = json.loads(_docker("run", "--rm", "toxiserve:serve", "pip", "list", "--format", "json").stdout)
    installed = {item["name"].lower() for item in listed}
    assert "gunicorn" in installed and installed & TRAINING_LIBRARIES == set(), installed & TRAINING_LIBRARIES
    # The whole runtime closure holds at least the batch image's packages: the serving image's are
    # at most 40 % of those.
    serve, batch = venv_bytes("toxiserve:serve"), venv_bytes("toxiserve:batch")
    sizes = {i: _docker("image", "inspect", "--format", "{{.Size}}", i).stdout.strip() for i in IMAGES}
    print(f"image sizes (bytes): {sizes}; /opt/venv: serve {serve}, batch {batch}")
    assert serve <= 0.4 * batch


def test_the_serving_image_runs_read_only_answers_like_the_checkout_and_drains(volume):
    port = free_port()
    started = _docker(
        "run", "--detach", "--network", "host", "--read-only", "--user", "10001",
        "--volume", f"{volume}:/var/lib/toxiserve",
        "--env", f"PORT={port}", "--env", "TOXISERVE_BIND_HOST=127.0.0.1", "--env", "WEB_CONCURRENCY=2",
        "--env", f"TOXISERVE_API_KEYS=img:{KEY}",
        "toxiserve:serve",
    )  # fmt: skip
    container = started.stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}"

        def check_alive():
            running = _docker("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
            assert running == "true", _docker("logs", container).stderr[-3000:]

        assert wait_ready(url, check_alive)["status"] == "ready"
        answer = requests.post(f"{url}/predict", json={"text": TEXT}, headers={"X-API-Key": KEY}, timeout=10).json()
        assert answer["model_version"] == "v3" and answer["score"] == pytest.approx(local_score("v3", TEXT), abs=1e-12)
        assert "http_requests_total" in requests.get(f"{url}/metrics", timeout=10).text
        stopped = _docker("stop", "--time", "30", container)
        assert stopped.returncode == 0
        state = json.loads(_docker("inspect", "--format", "{{json .State}}", container).stdout)
        shown = _docker("logs", container)
        logs = shown.stdout + shown.stderr
        assert state["ExitCode"] == 0 and "draining" in logs and "Shutting down: Master" in logs
        # everything it wrote is on the volume: the store and the metrics files
        listed = _docker("run", "--rm", "--volume", f"{volume}:/v", "toxiserve:serve", "ls", "/v").stdout.split()
        assert "store.sqlite3" in listed and "metrics" in listed
    finally:
        _docker("rm", "-f", container, check=False)


def test_the_grpc_image_reports_serving_on_grpc_health(volume):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    container = _docker(
        "run", "--detach", "--network", "host", "--read-only", "--user", "10001",
        "--volume", f"{volume}:/var/lib/toxiserve",
        "--env", f"TOXISERVE_GRPC_PORT={port}", "--env", "TOXISERVE_BIND_HOST=127.0.0.1",
        "--env", f"TOXISERVE_API_KEYS=img:{KEY}",
        "toxiserve:grpc",
    ).stdout.strip()  # fmt: skip
    try:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        status = None
        for _ in range(600):
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service="toxiserve.v1.Toxicity"), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                time.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.SERVING, _docker("logs", container).stderr[-3000:]
    finally:
        _docker("rm", "-f", container, check=False)


def test_the_batch_image_scores_a_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image's user 10001 writes the output here
    (data / "in.csv").write_text(f"text\nhave a lovely day\n{TEXT}\n")
    scored = _docker(
        "run", "--rm", "--network", "none", "--read-only", "--user", "10001", "--volume", f"{data}:/data",
        "toxiserve:batch", "batchjob", "score", "/data/in.csv", "--output", "/data/out.csv",
        "--model-version", "v3", "--workers", "1",
        timeout=300,
    )  # fmt: skip
    assert json.loads(scored.stdout)["rows_scored"] == 2
    rows = (data / "out.csv").read_text().splitlines()
    assert float(rows[2].split(",")[0]) == pytest.approx(local_score("v3", TEXT), abs=1e-12)
