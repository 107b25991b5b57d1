"""The rollout on real processes: two gunicorn masters (two 'hosts', 2 workers each) on one Redis, and
one on the embedded store, follow a change within 2 s; a version trained here is hot-loaded under
load without an error; the operator CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests

from .conftest import API_KEY, AUTH, REDIS_URL, isolated_store, redis_reachable
from .server import BIN, Server
from .test_canary import binomial_bounds
from .test_rollout import ADMIN, ADMIN_KEY, model_dir  # noqa: F401 - the model_dir fixture

pytestmark = pytest.mark.gunicorn
FOLLOW_SECONDS = 2.0  # the contract: every worker of every host follows a change within 2 s
CALLS = 1000


def env_for(store_url: str, namespace: str, **extra) -> dict:
    return {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_ADMIN_KEYS": f"ops:{ADMIN_KEY}",
        "TOXISERVE_LABELER_KEYS": "tests",  # its labels steer rollouts
        "TOXISERVE_RATE_LIMIT": "",
        "TOXISERVE_STORE_URL": store_url,
        "TOXISERVE_STORE_NAMESPACE": namespace,
        **extra,
    }


def routed_split(server: Server, calls: int, ids: str) -> tuple[Counter, set]:
    """`calls` routed requests with the fixed ids `{ids}-0`...: the same split on every run (the arm
    is a keyed hash of the id, and the tests fix the key); `ids` differs per call site, so no id is
    ever a replay."""
    versions, revisions = Counter(), set()
    with requests.Session() as session:
        for i in range(calls):
            body = {"text": "route me", "request_id": f"{ids}-{i}"}
            answer = session.post(f"{server.url}/predict", json=body, headers=AUTH, timeout=10)
            assert answer.status_code == 200, answer.text
            versions[answer.json()["model_version"]] += 1
            revisions.add(answer.headers["X-Rollout-Revision"])
    return versions, revisions


def change_then_check(admin_host: Server, hosts: list[Server], percent: float) -> None:
    # every worker has routed under the old revision
    before = [routed_split(host, 20, f"before-{n}-{percent}")[1] for n, host in enumerate(hosts)]
    assert all(seen == {"1"} for seen in before)
    changed = requests.put(
        f"{admin_host.url}/admin/rollout", json={"canary_percent": percent}, headers=ADMIN, timeout=30
    )
    assert changed.status_code == 200, changed.text
    time.sleep(FOLLOW_SECONDS)
    low, high = binomial_bounds(CALLS, percent / 100)
    for n, host in enumerate(hosts):
        versions, revisions = routed_split(host, CALLS, f"after-{n}-{percent}")
        assert revisions == {str(changed.json()["revision"])}
        assert low <= versions["v2"] <= high, versions


def test_two_hosts_on_one_redis_follow_a_change_within_two_seconds():
    if not redis_reachable():
        pytest.skip(f"no Redis reachable at {REDIS_URL} (.ci/run starts redis-server when it is installed)")
    env = env_for(REDIS_URL, f"rollout-{uuid.uuid4().hex[:8]}")
    with Server(env) as first, Server(env) as second:
        change_then_check(first, [first, second], 60.0)


def test_the_embedded_store_on_one_host():
    with Server(env_for(isolated_store(), "toxiserve")) as server:
        change_then_check(server, [server], 35.0)
        # --url and --json after the subcommand, as on the group (TOXISERVE_URL points nowhere)
        shown = toxiserve_cli("http://127.0.0.1:9", "status", "--url", server.url, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["canary_percent"] == 35.0
        listed = toxiserve_cli("http://127.0.0.1:9", "history", "--json", "--url", server.url)
        assert listed.returncode == 0 and json.loads(listed.stdout)["history"], listed.stderr
        # the key from a file, on the group or after the subcommand; a wrong one in the environment
        key_file = Path(tempfile.mkdtemp()) / "admin-key"
        key_file.write_text(ADMIN_KEY + "\n")
        for args in (("--key-file", str(key_file), "status"), ("status", "--key-file", str(key_file))):
            keyed = toxiserve_cli(server.url, *args, key="wrong-admin-key-0123456789")
            assert keyed.returncode == 0 and "revision" in keyed.stdout, keyed.stderr
        assert toxiserve_cli(server.url, "status", key="wrong-admin-key-0123456789").returncode == 1
        missing = toxiserve_cli(server.url, "status", "--key-file", str(key_file) + ".nope")
        assert missing.returncode == 2 and "cannot read" in missing.stderr


def toxiserve_cli(url: str, *args: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOXISERVE_URL": url, "TOXISERVE_ADMIN_KEY": key}
    return subprocess.run(
        [str(BIN / "toxiserve"), "rollout", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_a_version_trained_here_is_hot_loaded_under_load_without_an_error(model_dir):  # noqa: F811
    env = env_for(isolated_store(), "toxiserve", TOXISERVE_MODEL_DIR=str(model_dir))
    with Server(env) as server:
        statuses, versions, stop = Counter(), Counter(), threading.Event()

        def load() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    answer = session.post(
                        f"{server.url}/predict", json={"text": "under load"}, headers=AUTH, timeout=30
                    )
                    statuses[answer.status_code] += 1
                    if answer.status_code == 200:
                        versions[answer.json()["model_version"]] += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        changed = toxiserve_cli(server.url, "set", "--canary", "v3", "--canary-percent", "50", "--reason", "v3 trial")
        assert changed.returncode == 0, changed.stderr
        time.sleep(FOLLOW_SECONDS + 1)
        ready = requests.get(f"{server.url}/readyz", timeout=5)
        stop.set()
        for thread in threads:
            thread.join()
        assert ready.status_code == 200
        assert set(statuses) == {200}, statuses  # not one error while v3 loaded in every worker
        assert versions["v3"] > 0 and "v2" in versions
        assert "Traceback" not in server.output()


def test_repeated_version_switches_under_load_answer_no_error(model_dir):  # noqa: F811
    """20 changes that drop a version and bring it back, under 4 clients: a request routed under the
    old revision still finds its model (the dropped version is unloaded a poll later), and a request
    that names a version is served exactly while the rollout names it."""
    env = env_for(isolated_store(), "toxiserve", TOXISERVE_MODEL_DIR=str(model_dir))
    with Server(env) as server:
        statuses, stop = Counter(), threading.Event()

        def load(client: int) -> None:
            with requests.Session() as session:
                sent = 0
                while not stop.is_set():
                    body = {"text": "switch", "request_id": f"switch-{client}-{sent}"}
                    statuses[
                        session.post(f"{server.url}/predict", json=body, headers=AUTH, timeout=30).status_code
                    ] += 1
                    sent += 1

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for switch in range(20):
            canary = ("v8", "v2")[switch % 2]
            body = {"canary": canary, "canary_percent": 50, "reason": f"switch {switch}"}
            assert requests.put(f"{server.url}/admin/rollout", json=body, headers=ADMIN, timeout=30).status_code == 200
            time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
        assert set(statuses) == {200}, statuses
        assert sum(statuses.values()) > 100


def test_the_operator_cli(model_dir):  # noqa: F811
    env = env_for(isolated_store(), "toxiserve", TOXISERVE_MODEL_DIR=str(model_dir))
    with Server(env) as server:
        status = toxiserve_cli(server.url, "status")
        assert status.returncode == 0 and "revision 1" in status.stdout and "canary   v2 (10 %)" in status.stdout
        as_json = toxiserve_cli(server.url, "--json", "set", "--canary-percent", "50", "--reason", "half")
        assert as_json.returncode == 0 and json.loads(as_json.stdout)["revision"] == 2
        stale = toxiserve_cli(server.url, "set", "--canary-percent", "60", "--expected-revision", "1")
        assert stale.returncode == 1 and stale.stderr.startswith("Error: REVISION_CONFLICT")
        for bad in ("v4", "v9"):  # tampered, absent: refused, nothing changes
            refused = toxiserve_cli(server.url, "set", "--canary", bad)
            assert refused.returncode == 1 and "INVALID_ROLLOUT" in refused.stderr
        assert json.loads(toxiserve_cli(server.url, "--json", "status").stdout)["revision"] == 2
        forbidden = toxiserve_cli(server.url, "status", key=API_KEY)
        assert forbidden.returncode == 1 and "FORBIDDEN" in forbidden.stderr
        usage = toxiserve_cli(server.url, "set")
        assert usage.returncode == 2
        promoted = toxiserve_cli(server.url, "--json", "promote", "--reason", "v2 wins")
        assert promoted.returncode == 0 and json.loads(promoted.stdout)["stable"] == "v2"
        rolled = toxiserve_cli(server.url, "--json", "rollback")
        assert rolled.returncode == 0 and json.loads(rolled.stdout)["canary_percent"] == 0.0
        history = toxiserve_cli(server.url, "history")
        assert history.returncode == 0
        lines = history.stdout.splitlines()
        assert lines[0].split()[:3] == ["revision", "at", "by"] and [line.split()[0] for line in lines[1:]] == [
            "4",
            "3",
            "2",
            "1",
        ]
        unreachable = toxiserve_cli("http://127.0.0.1:9", "status")
        assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
