"""/metrics on a real gunicorn: totals summed over workers, through worker recycling, files bounded."""

import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import API_KEY
from .server import Server
from .test_metrics import value

pytestmark = pytest.mark.gunicorn

AUTH = {"X-API-Key": API_KEY}


def test_totals_equal_requests_sent_across_recycled_workers():
    metrics_dir = tempfile.mkdtemp(prefix="toxiserve-metrics-test-")
    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_MAX_REQUESTS": "25",
        "TOXISERVE_METRICS_DIR": metrics_dir,
    }
    with Server(env, workers=2) as server:
        calls = (
            [("/predict", {"text": "hello there"}, AUTH)] * 120
            + [("/v1/predict", {"text": "you idiot"}, AUTH)] * 60
            + [("/v2/batch_predict", {"texts": ["a b c"] * 32}, AUTH)] * 20
            + [("/v1/predict", {"text": "   "}, AUTH)] * 15
            + [("/v1/predict", {"text": "no key"}, {})] * 10
        )

        def send(call):
            path, body, headers = call
            return path, requests.post(f"{server.url}{path}", json=body, headers=headers, timeout=10).status_code

        with ThreadPoolExecutor(max_workers=4) as pool:
            sent = Counter(pool.map(send, calls))
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        # A worker that just reached max_requests may not be reaped (and archived) yet: give the
        # master a moment, then count whose files are left.
        deadline = time.time() + 10
        while True:
            files = sorted(p.name for p in Path(metrics_dir).glob("*.db"))
            pids = {name.rsplit("_", 1)[1][:-3] for name in files}
            if len(pids - {"archive"}) <= 3 or time.time() > deadline:
                break
            time.sleep(0.1)

    for (path, status), count in sent.items():
        assert value(text, "http_requests_total", route=path, method="POST", status=str(status)) == count, (
            path,
            status,
        )
    assert sent[("/predict", 200)] == 120
    routed = value(text, "canary_routed_total", arm="stable") + value(text, "canary_routed_total", arm="canary")
    assert routed == 120
    assert value(text, "auth_failures_total") == 10
    canary = value(text, "canary_routed_total", arm="canary")
    assert value(text, "inference_batch_size_count", model_version="v2") == 20 + canary  # batches + routed singles
    assert value(text, "inference_batch_size_count", model_version="v1") == 60 + 120 - canary
    assert value(text, "service_ready") == 1
    # 225 requests over 2 workers recycling every ~25: many workers lived and died, yet only the
    # master, the live workers and the archive own files.
    assert len(pids - {"archive"}) <= 3, files
    assert "archive" in pids
