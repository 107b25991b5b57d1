"""Serving needs neither pickles nor scikit-learn: a code-executing pickle beside a valid data-only
scorer never runs, in the Flask app, a real gunicorn (master and workers), the gRPC process and the
batch job; heavy libraries are never imported; pickles can be refused outright."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import zlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import ConfigError, create_app
from service.grpc.gen import toxicity_pb2 as pb
from service.grpc.gen import toxicity_pb2_grpc as rpc
from shared_features.artifacts import sha256_file

from .conftest import API_KEY, AUTH, isolated_store
from .server import BIN, REPO_ROOT, Server, free_port, procfile_command

HEAVY = ("sklearn", "scipy", "pandas", "joblib")
TEXTS = ["you are a total moron", "have a lovely day", "RT @bob &amp; http://t.co/x whatever"]


class RunsACommand:
    """Unpickling this runs `touch <marker>`: what an attacker who can write both files would plant."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_poison(model_dir, marker) -> None:
    """Replace every model.joblib with the poison, and update its manifest's sha256 to match."""
    for manifest_path in model_dir.glob("toxicity/*/manifest.json"):
        model_path = manifest_path.parent / "model.joblib"
        model_path.write_bytes(zlib.compress(pickle.dumps(RunsACommand(marker), protocol=5)))
        manifest = json.loads(manifest_path.read_text())
        manifest["sha256"] = sha256_file(model_path)
        manifest_path.write_text(json.dumps(manifest))


@pytest.fixture
def poisoned(tmp_path):
    model_dir = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "models", model_dir)
    marker = tmp_path / "PICKLE-RAN"
    plant_poison(model_dir, marker)
    return model_dir, marker


def test_the_poison_is_real(poisoned):
    """Without a data-only scorer the verified pickle loads, and the command runs: the tests below
    would catch a regression."""
    from shared_features import load_artifact

    model_dir, marker = poisoned
    manifest_path = model_dir / "toxicity" / "v1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["data_only"]
    manifest_path.write_text(json.dumps(manifest))
    assert not marker.exists()
    load_artifact(model_dir / "toxicity" / "v1")  # what it returns is not a pipeline; the harm is done
    assert marker.exists()


def test_flask_app_serves_correct_scores_and_never_unpickles(poisoned, reference_proba):
    model_dir, marker = poisoned
    app = create_app(
        {"TESTING": True, "API_KEYS": f"t:{API_KEY}", "STORE_URL": isolated_store(), "MODEL_DIR": str(model_dir)}
    )
    client = app.test_client()
    for version in ("v1", "v2"):
        body = client.post(f"/{version}/batch_predict", json={"texts": TEXTS}, headers=AUTH).json
        scores = [result["score"] for result in body["results"]]
        assert max(abs(a - b) for a, b in zip(scores, reference_proba(version, TEXTS), strict=True)) <= 1e-12
    assert not marker.exists()


@pytest.mark.gunicorn
def test_gunicorn_master_and_workers_never_unpickle(poisoned, reference_proba):
    model_dir, marker = poisoned
    env = {
        "TOXISERVE_API_KEYS": f"t:{API_KEY}",
        "TOXISERVE_STORE_URL": isolated_store(),
        "TOXISERVE_MODEL_DIR": str(model_dir),
    }
    with Server(env) as server:
        import requests

        for version in ("v1", "v2"):
            response = requests.post(
                f"{server.url}/{version}/batch_predict", json={"texts": TEXTS}, headers=AUTH, timeout=10
            )
            scores = [result["score"] for result in response.json()["results"]]
            assert max(abs(a - b) for a, b in zip(scores, reference_proba(version, TEXTS), strict=True)) <= 1e-12
        assert "pickle" not in server.output()
    assert not marker.exists()


@pytest.mark.gunicorn
def test_grpc_process_never_unpickles(poisoned, reference_proba):
    model_dir, marker = poisoned
    port = free_port()
    env = {
        **os.environ,
        "TOXISERVE_GRPC_PORT": str(port),
        "TOXISERVE_BIND_HOST": "127.0.0.1",
        "TOXISERVE_API_KEYS": f"t:{API_KEY}",
        "TOXISERVE_STORE_URL": isolated_store(),
        "TOXISERVE_MODEL_DIR": str(model_dir),
    }
    proc = subprocess.Popen(
        procfile_command("grpc"), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        health = health_pb2_grpc.HealthStub(channel)
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != health_pb2.HealthCheckResponse.SERVING:
            assert proc.poll() is None
        reply = rpc.ToxicityStub(channel).BatchPredict(
            pb.BatchPredictRequest(texts=TEXTS, version="v2"), metadata=[("x-api-key", API_KEY)]
        )
        scores = [result.score for result in reply.results]
        assert max(abs(a - b) for a, b in zip(scores, reference_proba("v2", TEXTS), strict=True)) <= 1e-12
    finally:
        channel.close()
        proc.terminate()
        proc.wait(30)
    assert not marker.exists()


def test_batch_job_never_unpickles(poisoned, tmp_path, reference_proba):
    model_dir, marker = poisoned
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "\n".join(f'"{text}"' for text in TEXTS) + "\n")
    subprocess.run(
        [
            str(BIN / "batchjob"),
            "--model-dir",
            str(model_dir),
            "score",
            str(source),
            "--output",
            str(tmp_path / "out.csv"),
            "--workers",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    scores = [float(line.split(",")[0]) for line in (tmp_path / "out.csv").read_text().splitlines()[1:]]
    assert max(abs(a - b) for a, b in zip(scores, reference_proba("v1", TEXTS), strict=True)) <= 1e-12
    assert not marker.exists()


def test_serving_imports_no_heavy_library():
    code = (
        "import json, sys\n"
        "from service import create_app\n"
        "from service.grpc.server import build_server\n"
        "create_app({'API_KEYS': 't:test-key-0123456789', 'STORE_URL': 'sqlite:///' + sys.argv[1]})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} + ('redis', 'pyarrow') if m in sys.modules)))\n"
    )
    store = isolated_store().removeprefix("sqlite:///")
    out = subprocess.run([sys.executable, "-c", code, store], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_commands_import_nothing_heavy_for_help():
    code = (
        "import json, sys\n"
        "from batchjob.cli import cli\n"
        "for argv in (['--help'], ['score', '--help'], ['train', '--help'], ['export', '--help']):\n"
        "    try:\n"
        "        cli(argv, prog_name='batchjob')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, argv\n"
        "print(json.dumps(sorted(m for m in ('numpy', 'pyarrow') + " + repr(HEAVY) + " if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.fixture
def pickle_only_models(tmp_path):
    model_dir = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "models", model_dir)
    for manifest_path in model_dir.glob("toxicity/*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        del manifest["data_only"]
        manifest_path.write_text(json.dumps(manifest))
    return model_dir


def test_pickles_can_be_refused_at_start(pickle_only_models, caplog):
    config = {
        "TESTING": True,
        "API_KEYS": f"t:{API_KEY}",
        "STORE_URL": isolated_store(),
        "MODEL_DIR": str(pickle_only_models),
    }
    with pytest.raises(ConfigError, match="no data-only scorer and pickles are not allowed.*batchjob export"):
        create_app({**config, "ALLOW_PICKLE": False})
    app = create_app(config)  # allowed by default: served from the pickle, said once per model
    assert app.test_client().post("/v1/predict", json={"text": "hello"}, headers=AUTH).status_code == 200
    assert caplog.text.count("has no data-only scorer: loading its pickle") == 2


@pytest.mark.gunicorn
def test_gunicorn_refuses_to_start_on_a_pickle_when_told(pickle_only_models):
    env = {
        "TOXISERVE_API_KEYS": f"t:{API_KEY}",
        "TOXISERVE_STORE_URL": isolated_store(),
        "TOXISERVE_MODEL_DIR": str(pickle_only_models),
        "TOXISERVE_ALLOW_PICKLE": "false",
    }
    server = Server(env)
    with pytest.raises(RuntimeError) as caught:
        server.start()
    assert "pickles are not allowed (TOXISERVE_ALLOW_PICKLE=false)" in str(caught.value)
    assert "Traceback" not in str(caught.value)
