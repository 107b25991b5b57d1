"""The OpenAPI document tells the truth: schemathesis `--checks all` (coverage, fuzzing and the
stateful phase) against a real gunicorn. Every status, error code, header and limit it meets must
be in /openapi.json, and no schema-valid request may be refused outside the documented reasons."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .server import Server

pytestmark = pytest.mark.gunicorn

KEY = "k-contract-0001112222"
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.skipif(
    not SCHEMATHESIS.exists() and not shutil.which("schemathesis"), reason="schemathesis is in the dev extra"
)
def test_schemathesis_finds_nothing_the_document_does_not_say():
    # Schemathesis sends keyless requests on purpose: past the default failed-check limit its
    # address would be refused (429) even with the key.
    env = {"TOXISERVE_API_KEYS": f"tests:{KEY}", "TOXISERVE_RATE_LIMIT": "", "TOXISERVE_AUTH_FAILURE_LIMIT": ""}
    with Server(env) as server:
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--phases",
                "coverage,fuzzing,stateful",
                "--max-examples",
                "30",
                "--seed",
                "20261125",  # reproducible in CI; run it without a seed to explore further
                "-H",
                f"X-API-Key: {KEY}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Stateful" in result.stdout and "❌" not in result.stdout


def test_docs_page_serves_swagger_ui_from_the_package(client):
    page = client.get("/docs")
    assert page.status_code == 200 and b"/openapi.json" in page.data
    script = client.get("/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.data) > 100_000
