"""The operations kit: alert rules pass promtool's checks and unit tests, and every metric that the
rules and the Grafana dashboard name exists in a real /metrics scrape, which promtool accepts."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.service.server import Server

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "toxiserve.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus; .ci/run installs it)"
)
KEY, LIMITED = "k-ops-0001112222", "k-ops-limited-2223333"

# Words in the expressions that are not metric names.
NOT_METRICS = {"by", "le", "and", "or", "model_version", "feature", "operation", "arm", "status", "route", "key_id"}
NOT_METRICS |= {"error_code", "reason", "method", "instance", "job", "code", "bin"}


def recorded() -> set[str]:
    """Series the rules record themselves (Prometheus makes them; no process exposes them)."""
    return {r["record"] for group in _yaml(RULES)["groups"] for r in group["rules"] if "record" in r}


def expressions() -> list[str]:
    rules = [r["expr"] for group in _yaml(RULES)["groups"] for r in group["rules"]]
    panels = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    return rules + panels


def _yaml(path: Path) -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the rule file")
    return yaml.safe_load(path.read_text())


def metric_names(expression: str) -> set[str]:
    """Identifiers used as series: followed by a selector, a range, or a closing parenthesis."""
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    found = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[)])", without_strings))
    return found - NOT_METRICS


@needs_promtool
def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=RULES.parent, capture_output=True, text=True, timeout=120
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {r["alert"] for group in _yaml(RULES)["groups"] for r in group["rules"] if "alert" in r}
    tests = (RULES.parent / "alerts.test.yml").read_text()
    assert all(f"alertname: {alert}" in tests for alert in alerts), "every alert has a unit test"


def test_every_metric_the_rules_and_dashboard_name_is_in_a_real_scrape():
    env = {
        "TOXISERVE_API_KEYS": f"tests:{KEY},limited:{LIMITED}",
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_RATE_LIMITS_PER_KEY": json.dumps({"limited": "2/minute"}),
    }
    with Server(env, workers=1) as server:
        auth = {"X-API-Key": KEY}
        texts = [f"sample text number {i} for the drift profile" for i in range(150)]
        assert requests.post(f"{server.url}/v1/batch_predict", json={"texts": texts}, headers=auth, timeout=30).ok
        assert requests.post(f"{server.url}/predict", json={"text": "routed"}, headers=auth, timeout=30).ok
        for _ in range(3):  # the third is over 2/minute
            requests.post(f"{server.url}/v1/predict", json={"text": "x"}, headers={"X-API-Key": LIMITED}, timeout=30)
        assert requests.get(f"{server.url}/{'a' * 5000}", timeout=30).status_code == 414  # a worker refusal
        scrape = requests.get(f"{server.url}/metrics", timeout=30).text
    grpc_scrape = scrape_of_a_grpc_process()
    exposed = {
        line.split("{")[0].split(" ")[0]
        for text in (scrape, grpc_scrape)
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    named = set().union(*(metric_names(e) for e in expressions())) - recorded()
    assert {"http_requests_total", "routed_requests_total", "store_circuit_open"} <= named
    assert {"drift_observations_total", "drift_reference_share", "drift_psi_threshold"} <= named
    assert {"grpc_requests_total", "grpc_request_duration_seconds_bucket"} <= named
    assert named - exposed == set(), f"named but not exposed: {sorted(named - exposed)}"
    if PROMTOOL:
        for text in (scrape, grpc_scrape):
            linted = subprocess.run(
                [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
            )
            assert linted.returncode == 0, linted.stdout + linted.stderr


def scrape_of_a_grpc_process() -> str:
    """The gRPC process's /metrics (its own port) after one call."""
    from service.grpc.gen import toxicity_pb2 as pb
    from tests.service.server import free_port
    from tests.service.test_grpc import KEY as GRPC_KEY
    from tests.service.test_grpc import GrpcProcess

    port = free_port()
    running = GrpcProcess({"TOXISERVE_GRPC_METRICS_PORT": str(port)})
    try:
        running.stub.Predict(pb.PredictRequest(text="a scrape"), metadata=GRPC_KEY)
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    finally:
        running.stop()


@needs_promtool
def test_the_windowed_drift_rule_is_the_python_formula(tmp_path):
    """The recording rule and shared_features.drift.psi give one number: v3's own score profile
    against an hour of random live counts, evaluated by promtool."""
    from shared_features.drift import psi, reference_counts, smoothed_shares

    profile = json.loads((ROOT / "models" / "toxicity" / "v3" / "manifest.json").read_text())["reference_profile"]
    expected = reference_counts(profile, "score")
    per_minute = np.random.default_rng(7).integers(0, 20, size=len(expected))
    labels = 'model_version="v3",feature="score"'
    series = [
        {"series": f'drift_observations_total{{{labels},bin="{i}"}}', "values": f"0+{int(n)}x120"}
        for i, n in enumerate(per_minute)
    ] + [
        {"series": f'drift_reference_share{{{labels},bin="{i}"}}', "values": f"{float(share)!r}x120"}
        for i, share in enumerate(smoothed_shares(expected))
    ]
    value = psi(per_minute * 60, expected)  # a steady counter's increase over the 1 h window
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        # rounded: the sum's order differs between the two, and promtool compares exactly
                        "expr": "round(toxiserve:drift_psi:window, 0.000001)",
                        "eval_time": "90m",
                        "exp_samples": [{"labels": f"{{{labels}}}", "value": round(value, 6)}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "drift.test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    tested = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr
