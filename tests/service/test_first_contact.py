"""What a newcomer trips on first: every answer says what is wrong and how to fix it."""

import os
import subprocess

import pytest

from .conftest import post
from .server import REPO_ROOT, Server, free_port, procfile_command


def test_401_names_the_header_and_notices_a_bearer_token(client):
    missing = client.post("/v1/predict", json={"text": "hi"})
    assert missing.status_code == 401 and "X-API-Key header" in missing.json["message"]
    bearer = client.post("/v1/predict", json={"text": "hi"}, headers={"Authorization": "Bearer demo-key-0123456789"})
    assert bearer.status_code == 401 and "an Authorization header was sent" in bearer.json["message"]
    wrong = client.post("/v1/predict", json={"text": "hi"}, headers={"X-API-Key": "nope"})
    assert wrong.json["message"] == missing.json["message"]  # missing and wrong keys stay indistinguishable


def test_a_json_array_body_is_told_to_be_an_object(client):
    response = post(client, "/v1/predict", ["hi"])
    assert response.status_code == 400 and response.json["message"] == "request body must be a JSON object"


def test_an_unknown_version_is_named(client):
    response = post(client, "/v9/predict", {"text": "hi"})
    assert response.status_code == 404 and "no model version 'v9'" in response.json["message"]
    assert post(client, "/nowhere", {}).json["message"] == "no such endpoint"


def test_metrics_content_type_has_one_charset(client):
    content_type = client.get("/metrics").headers["Content-Type"]
    assert content_type.count("charset") == 1 and content_type.startswith("text/plain")


def run_web(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        procfile_command(),
        cwd=REPO_ROOT,
        env={**os.environ, "TOXISERVE_BIND_HOST": "127.0.0.1", "WEB_CONCURRENCY": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.gunicorn
def test_a_missing_model_directory_is_one_line_not_a_traceback(tmp_path):
    result = run_web(
        {"PORT": str(free_port()), "TOXISERVE_API_KEYS": "t:key-0123456789abcdef", "TOXISERVE_MODEL_DIR": str(tmp_path)}
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "Error: cannot load the models: model toxicity/v1 not found" in output


@pytest.mark.gunicorn
def test_a_taken_port_is_said_at_once_before_loading_models():
    with Server({"TOXISERVE_API_KEYS": "t:key-0123456789abcdef"}, workers=1) as first:
        result = run_web({"PORT": str(first.port), "TOXISERVE_API_KEYS": "t:key-0123456789abcdef"})
    output = result.stdout + result.stderr
    assert result.returncode == 1 and f"127.0.0.1:{first.port} is already in use" in output
    assert "models loaded" not in output and "Can't connect" not in output


@pytest.mark.gunicorn
def test_gunicorn_tls_options_are_refused_at_start_with_the_way_out(tmp_path):
    """The worker reads requests off the raw socket: with --certfile it once started, answered no
    TLS handshake and logged a 408."""
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("not used: the server refuses before loading it\n")
    result = run_web(
        {
            "PORT": str(free_port()),
            "TOXISERVE_API_KEYS": "t:key-0123456789abcdef",
            "GUNICORN_CMD_ARGS": f"--certfile {tmp_path / 'cert.pem'} --keyfile {tmp_path / 'key.pem'}",
        }
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    assert "does not terminate TLS" in output and "terminate TLS at a proxy" in output
