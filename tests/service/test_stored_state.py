"""A stored rollout that names a version this host cannot load never bricks a start: the process
serves what it can, says what is missing (/readyz, metrics, one log line), follows the version in
once it appears, and `toxiserve rollout reset` re-seeds the state from the settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import requests

from service import ConfigError
from shared_features import resolve_params
from shared_features.dataset import read_labeled
from shared_features.training import train_model

from .conftest import AUTH, isolated_store, post
from .server import BIN, REPO_ROOT, Server
from .test_grpc import GrpcProcess
from .test_rollout import ADMIN, ADMIN_KEY, admin_app, routed, wait_until

PINNED = {"stable": "v1", "canary": "v2", "canary_percent": 10.0}  # tests/conftest.py's arms: the settings' seed


@pytest.fixture
def with_v8(tmp_path, tiny_csv):
    """A model directory with the shipped models and v8, which the shipped directory does not have."""
    root = tmp_path / "with-v8"
    shutil.copytree(REPO_ROOT / "models", root)
    train_model(read_labeled(tiny_csv), "toxicity", "v8", resolve_params("word-ngrams"), root, threshold=0.5)
    return root


def store_naming_v8(with_v8, change: dict) -> str:
    """A store whose rollout another host, which has v8, changed to name it."""
    store_url = isolated_store()
    host_with_v8 = admin_app(store_url, MODEL_DIR=str(with_v8)).test_client()
    answer = host_with_v8.put("/admin/rollout", json={**change, "reason": "v8 on the host that has it"}, headers=ADMIN)
    assert answer.status_code == 200, answer.json
    return store_url


def metric(client, name: str) -> float:
    line = next(line for line in client.get("/metrics").text.splitlines() if line.startswith(name + " "))
    return float(line.split()[-1])


def test_a_missing_stable_is_replaced_by_the_settings_stable_and_reported(with_v8, caplog):
    store_url = store_naming_v8(with_v8, {"stable": "v8", "canary": "v2", "canary_percent": 20})
    with caplog.at_level("ERROR", logger="service.rollout.state"):
        client = admin_app(store_url).test_client()  # the shipped directory: no v8
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready"
    degraded = ready.json["degraded"]
    assert degraded["revision"] == 2 and list(degraded["missing"]) == ["v8"]
    assert "v8" in degraded["missing"]["v8"] and degraded["stored"]["stable"] == "v8"
    assert degraded["serving"] == {"stable": "v1", "canary": "v2", "canary_percent": 20.0}
    assert {r.json["model_version"] for r in routed(client, 200)} == {"v1", "v2"}
    assert metric(client, "rollout_degraded") == 1.0
    (line,) = [r.getMessage() for r in caplog.records if "cannot load" in r.getMessage()]
    assert "revision 2" in line and store_url in line and "set by ops" in line and "v8 (stable" in line
    assert "toxiserve rollout reset" in line


def test_a_missing_canary_gives_its_share_to_stable(with_v8):
    store_url = store_naming_v8(with_v8, {"canary": "v8", "canary_percent": 50})
    client = admin_app(store_url).test_client()
    assert client.get("/readyz").json["degraded"]["serving"] == {"stable": "v1", "canary": "v1", "canary_percent": 0}
    answers = routed(client, 100)
    assert {r.json["model_version"] for r in answers} == {"v1"}
    assert post(client, "/v2/predict", {"text": "x"}).status_code == 404  # no longer named: not served


def test_the_version_is_followed_in_once_it_appears(with_v8, tmp_path):
    store_url = store_naming_v8(with_v8, {"canary": "v8", "canary_percent": 100})
    later = tmp_path / "later"
    shutil.copytree(REPO_ROOT / "models", later)
    client = admin_app(store_url, MODEL_DIR=str(later), ROLLOUT_POLL_SECONDS=0.05).test_client()
    assert client.get("/readyz").json["degraded"]["missing"].keys() == {"v8"}
    post(client, "/predict", {"text": "starts the follower"})
    shutil.copytree(with_v8 / "toxicity" / "v8", later / "toxicity" / "v8")
    wait_until(lambda: "degraded" not in client.get("/readyz").json)
    assert {r.json["model_version"] for r in routed(client, 20)} == {"v8"}
    assert metric(client, "rollout_degraded") == 0.0


def test_nothing_loadable_still_refuses_to_start(with_v8):
    store_url = store_naming_v8(with_v8, {"stable": "v8", "canary": "v8"})
    with pytest.raises(ConfigError, match="cannot load the models"):
        admin_app(store_url, STABLE_VERSION="v7", CANARY_VERSION="v7")


def test_reset_reseeds_from_the_settings_with_its_reason_in_the_history(with_v8):
    store_url = store_naming_v8(with_v8, {"stable": "v8", "shadow": "v2", "shadow_percent": 5})
    client = admin_app(store_url).test_client()
    no_reason = client.post("/admin/rollout/reset", json={}, headers=ADMIN)
    assert no_reason.status_code == 422 and no_reason.json["error_code"] == "INVALID_ROLLOUT"
    assert client.post("/admin/rollout/reset", json={"reason": "x"}, headers=AUTH).status_code == 403
    reset = client.post("/admin/rollout/reset", json={"reason": "v8 is gone"}, headers=ADMIN)
    assert reset.status_code == 200, reset.json
    assert {k: reset.json[k] for k in PINNED} == PINNED and reset.json["shadow"] is None
    assert reset.json["revision"] == 3 and reset.json["reason"] == "v8 is gone"
    newest = client.get("/admin/rollout/history", headers=ADMIN).json["history"][0]
    assert newest["decision"] == "reset" and newest["reason"] == "v8 is gone" and newest["by"] == "ops"
    assert "degraded" not in client.get("/readyz").json


@pytest.mark.gunicorn
def test_on_gunicorn_and_grpc_a_stored_missing_version_serves_then_the_cli_resets(with_v8):
    store_url = store_naming_v8(with_v8, {"stable": "v8", "canary": "v2", "canary_percent": 30})
    env = {
        "TOXISERVE_API_KEYS": f"tests:{AUTH['X-API-Key']}",
        "TOXISERVE_ADMIN_KEYS": f"ops:{ADMIN_KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_STORE_URL": store_url,
    }
    with Server(env) as server:
        with requests.Session() as session:
            answers = [
                session.post(f"{server.url}/predict", json={"text": "x", "request_id": f"g-{i}"}, headers=AUTH)
                for i in range(200)
            ]
            assert {a.status_code for a in answers} == {200}
            # the canary keeps its share; the missing stable's share goes to the settings' stable
            assert {a.json()["model_version"] for a in answers} == {"v1", "v2"}
            readiness = [session.get(f"{server.url}/readyz").json() for _ in range(10)]
        assert all(r["degraded"]["missing"].keys() == {"v8"} for r in readiness)
        log = open(server.log.name).read()
        assert log.count("names versions this host cannot load") == 1  # the master loads once, before forking
        grpc_process = GrpcProcess({"TOXISERVE_STORE_URL": store_url})  # starts too: SERVING, or it raises
        try:
            assert "names versions this host cannot load" in grpc_process.output()
        finally:
            grpc_process.stop()
        reset = subprocess.run(
            [str(BIN / "toxiserve"), "rollout", "--json", "reset", "--reason", "v8 lives on another host"],
            env={**os.environ, "TOXISERVE_URL": server.url, "TOXISERVE_ADMIN_KEY": ADMIN_KEY},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reset.returncode == 0, reset.stderr
        assert {k: json.loads(reset.stdout)[k] for k in PINNED} == PINNED
        # every worker adopts the reset revision, served in full
        wait_until(lambda: all("degraded" not in requests.get(f"{server.url}/readyz").json() for _ in range(10)))
