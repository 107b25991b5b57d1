"""Automatic rollouts on real gunicorn processes, with short steps so they take seconds.

Each bad canary is built here and must be rolled back by the controller, naming the right
guardrail: one that raises on some texts (error rate), one that sleeps (latency), one trained on
inverted labels (feedback macro-F1; and score PSI). The good canary v2 is promoted through every
step on two hosts sharing one Redis while only the host without the controller gets traffic, so
the evidence must cross hosts; the controller's process is SIGKILLed mid-plan and another takes
over. Traffic is real tweets (the labeled dataset), each with a request id; feedback is their
true label, sent with the key that made the request.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import datetime

import pytest
import requests

from .bad_canaries import build, dataset_rows
from .conftest import API_KEY, AUTH, REDIS_URL, isolated_store, redis_reachable
from .server import REPO_ROOT, Server
from .test_gunicorn_faults import (
    private_redis,  # noqa: F401 - a Redis of the test's own, to hang
    wait_for,
)
from .test_rollout import ADMIN
from .test_rollout_gunicorn import env_for

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]
PLAN_TIMEOUT = 120  # seconds a plan may take on a slow machine before the test gives up (not a speed claim)
KILLED_MID_REQUEST = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


@pytest.fixture(scope="module")
def plan_models(tmp_path_factory, shared_data):
    return build(tmp_path_factory.mktemp("plan-models"), shared_data)


@pytest.fixture(scope="module")
def tweets(shared_data):
    return dataset_rows(shared_data)


def plan_env(store_url: str, namespace: str, models) -> dict:
    # PYTHONPATH: the bad canaries' pickles name classes in this test package.
    return env_for(store_url, namespace, TOXISERVE_MODEL_DIR=str(models), PYTHONPATH=str(REPO_ROOT))


class Traffic:
    """Client threads sending routed requests (real tweets, each with a request id) to `urls`, and,
    with `feedback`, each answer's true label. Bounded in time; stopped on exit."""

    def __init__(self, urls: list[str], rows, threads: int = 3, feedback: bool = False) -> None:
        self.urls, self.rows, self.feedback = urls, rows, feedback
        self.statuses: Counter = Counter()
        self.versions: Counter = Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.send, args=(n,)) for n in range(threads)]

    # A worker SIGKILLed before it answered drops the connection; one killed while it wrote the answer
    # leaves the body short (seen once in five CI-like runs): the same event for the client.
    def send(self, n: int) -> None:
        deadline = time.monotonic() + PLAN_TIMEOUT
        rows = itertools.islice(itertools.cycle(self.rows), n, None, len(self.threads))
        with requests.Session() as session:
            for text, label in rows:
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                url = self.urls[n % len(self.urls)]
                request_id = uuid.uuid4().hex
                try:
                    answer = session.post(f"{url}/predict", json={"text": text, "request_id": request_id}, headers=AUTH)
                    self.statuses[answer.status_code] += 1
                    if answer.status_code == 200:
                        self.versions[answer.json()["model_version"]] += 1
                        if self.feedback:
                            given = {"request_id": request_id, "label": label}
                            session.post(f"{url}/v1/feedback", json=given, headers=AUTH).raise_for_status()
                except KILLED_MID_REQUEST:  # its worker was SIGKILLed mid-request: counted, and on we go
                    self.statuses["dropped"] += 1

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def routed_answer(url: str, text: str = "which arm?") -> requests.Response:
    return requests.post(
        f"{url}/predict", json={"text": text, "request_id": uuid.uuid4().hex}, headers=AUTH, timeout=30
    )


def start_plan(url: str, body: dict) -> dict:
    answer = requests.put(f"{url}/admin/rollout/plan", json=body, headers=ADMIN, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def plan(url: str) -> dict:
    return requests.get(f"{url}/admin/rollout/plan", headers=ADMIN, timeout=30).json()


def finished(url: str) -> dict:
    """The plan once it ended (a 503 while the store is down is not an end)."""
    return wait_for(lambda: (found := plan(url)).get("status") not in (None, "running") and found, PLAN_TIMEOUT, 0.2)


def decisions(url: str, plan_id: str) -> list[dict]:
    """The plan's history entries, oldest first."""
    history = requests.get(f"{url}/admin/rollout/history", headers=ADMIN, timeout=30).json()["history"]
    return [entry for entry in reversed(history) if entry.get("plan") == plan_id]


def survived(entries: list[dict]) -> float:
    """Seconds from the plan's start to its last decision, by the history's own clock."""
    first, last = (datetime.fromisoformat(entries[i]["at"]) for i in (0, -1))
    return (last - first).total_seconds()


@pytest.fixture(scope="module")
def one_host(plan_models):
    with Server(plan_env(isolated_store(), "toxiserve", plan_models)) as server:
        yield server


BAD_PLAN = {"steps": [25, 50, 100], "step_seconds": 30, "min_requests": 40, "interval_seconds": 0.5}


@pytest.mark.parametrize(
    ("canary", "guardrails", "feedback", "named"),
    [
        # raises on some texts; served from its pickle (sklearn), slower than v1's data-only scorer, so
        # latency may fail beside it on a busy machine (once in a CI-like run): not what this case tests
        ("v4", {"max_latency_ratio": None}, False, {"error_rate"}),
        ("v5", {}, False, {"latency"}),  # sleeps
        ("v10", {"max_score_psi": None, "min_feedback": 40}, True, {"feedback_f1"}),  # inverted labels
        ("v10", {}, False, {"score_psi"}),  # inverted labels, seen in its scores alone
    ],
    ids=["raises-error_rate", "sleeps-latency", "inverted-feedback_f1", "inverted-score_psi"],
)
def test_a_bad_canary_is_rolled_back_naming_its_guardrail(one_host, tweets, canary, guardrails, feedback, named):
    started = start_plan(one_host.url, {"canary": canary, **BAD_PLAN, "guardrails": guardrails})
    assert started["status"] == "running" and started["current_step"]["percent"] == 25.0
    with Traffic([one_host.url], tweets, feedback=feedback):
        ended = finished(one_host.url)
    assert ended["status"] == "rolled_back", ended["outcome"]
    failed = {check["guardrail"] for check in ended["evaluation"] if check["status"] == "fail"}
    assert failed == named, ended["outcome"]
    for guardrail in named:  # named with its numbers
        assert guardrail in ended["outcome"]["reason"]
    entries = decisions(one_host.url, started["id"])
    assert entries[0]["decision"] == "start" and entries[-1]["decision"] == "rollback"
    assert entries[-1]["change"] == {"canary_percent": 0.0} and entries[-1]["evidence"]["step"] == 0
    assert {entry["decision"] for entry in entries[1:-1]} <= {"hold"}  # never advanced
    print(f"{canary} ({', '.join(named)}) survived {survived(entries):.2f} s: {ended['outcome']['reason']}")
    state = requests.get(f"{one_host.url}/admin/rollout", headers=ADMIN, timeout=30).json()
    assert state["canary"] == canary and state["canary_percent"] == 0.0
    # Under the rollback's revision the canary gets nothing, and every answer is v1's. (A worker
    # still loading the canary for an earlier revision routes under that one until it has caught
    # up: there, the raising canary may still fail a request, as it did before the rollback.)
    rolled_back, under_it = entries[-1]["revision"], []
    for text, _ in itertools.islice(itertools.cycle(tweets), 2000):
        answer = routed_answer(one_host.url, text)
        if int(answer.headers["X-Rollout-Revision"]) < rolled_back:
            assert answer.status_code == 200 or answer.json()["error_code"] == "INFERENCE_FAILED", answer.text
            continue
        assert answer.status_code == 200, answer.text
        under_it.append(answer.json()["model_version"])
        if len(under_it) >= 60:
            break
    assert len(under_it) == 60 and set(under_it) == {"v1"}


def test_two_hosts_on_one_redis_promote_the_good_canary_through_every_step(plan_models, tweets):
    if not redis_reachable():
        pytest.skip(f"no Redis reachable at {REDIS_URL} (.ci/run starts redis-server when it is installed)")
    env = plan_env(REDIS_URL, f"plan-{uuid.uuid4().hex[:8]}", plan_models)
    with Server(env) as first, Server(env) as second:
        body = {"canary": "v2", "steps": [20, 50, 100], "step_seconds": 1, "min_requests": 100, "interval_seconds": 0.5}
        started = start_plan(first.url, body)
        holder = wait_for(lambda: plan(first.url).get("controller"), PLAN_TIMEOUT, 0.2)
        pid = int(holder["owner"].split(":")[1])
        assert pid in first.worker_pids() + second.worker_pids()
        idle = first if pid in first.worker_pids() else second  # the controller's host gets no traffic
        busy = second if idle is first else first
        with Traffic([busy.url], tweets):
            ended = finished(first.url)
        assert ended["status"] == "promoted", ended["outcome"]
        entries = decisions(first.url, started["id"])
        moves = [entry for entry in entries if entry["decision"] not in ("start", "hold")]
        assert [entry["decision"] for entry in moves] == ["advance", "advance", "promote"]
        assert [entry["evidence"]["percent"] for entry in moves] == [20.0, 50.0, 100.0]
        for entry in moves:  # decided on the idle host, from the busy host's evidence alone
            assert int(entry["controller"].split(":")[1]) in idle.worker_pids()
            assert entry["evidence"]["canary_requests"] >= 100
            assert {check["status"] for check in entry["evidence"]["guardrails"]} <= {"pass", "off"}
        state = requests.get(f"{second.url}/admin/rollout", headers=ADMIN, timeout=30).json()
        assert (state["stable"], state["canary"], state["canary_percent"]) == ("v2", "v1", 0.0)
        print(f"v2 promoted through 3 steps in {survived(entries):.2f} s")


def test_the_controller_sigkilled_mid_plan_is_replaced_and_the_plan_finishes(plan_models, tweets):
    with Server(plan_env(isolated_store(), "toxiserve", plan_models)) as server:
        body = {"canary": "v6", "steps": [20, 50, 100], "step_seconds": 2, "min_requests": 40, "interval_seconds": 0.5}
        started = start_plan(server.url, body)
        with Traffic([server.url], tweets) as traffic:
            wait_for(lambda: plan(server.url)["step"] >= 1, PLAN_TIMEOUT, 0.2)
            victim = plan(server.url)["controller"]["owner"]
            os.kill(int(victim.split(":")[1]), signal.SIGKILL)
            killed_at = time.time()
            ended = finished(server.url)
        assert ended["status"] == "promoted", ended["outcome"]
        assert set(traffic.statuses) <= {200, "dropped"} and traffic.statuses["dropped"] <= 3  # the victim's in-flight
        entries = decisions(server.url, started["id"])
        after = [entry for entry in entries if datetime.fromisoformat(entry["at"]).timestamp() > killed_at]
        assert after and all(entry["controller"] != victim for entry in after)
        assert after[-1]["decision"] == "promote"
        takeover = datetime.fromisoformat(after[0]["at"]).timestamp() - killed_at
        print(f"controller {victim} SIGKILLed; {after[0]['controller']} decided {takeover:.2f} s later")


def test_the_plan_cli(plan_models):
    import json
    import subprocess

    from .server import BIN
    from .test_rollout import ADMIN_KEY

    def cli(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "TOXISERVE_URL": server.url, "TOXISERVE_ADMIN_KEY": ADMIN_KEY}
        return subprocess.run([str(BIN / "toxiserve"), "rollout", *args], capture_output=True, text=True, env=env)

    with Server(plan_env(isolated_store(), "toxiserve", plan_models)) as server:
        assert cli("plan", "status").returncode == 1  # none yet: NOT_FOUND
        usage = cli("plan", "start", "--canary", "v2", "--guardrail", "latency")
        assert usage.returncode == 2 and "NAME=VALUE" in usage.stderr
        started = cli("plan", "start", "--canary", "v2", "--steps", "10,50", "--guardrail", "max_latency_ratio=1.5")
        assert started.returncode == 0, started.stderr
        assert "(running): v2 against v1, steps 10, 50 %" in started.stdout and "latency" in started.stdout
        shown = json.loads(cli("--json", "plan", "status").stdout)
        assert shown["guardrails"]["max_latency_ratio"] == 1.5 and shown["steps"] == [10.0, 50.0]
        again = cli("plan", "start", "--canary", "v10")
        assert again.returncode == 1 and again.stderr.startswith("Error: PLAN_RUNNING")
        # --wait shows the live step and guardrails on stderr while it waits, then the outcome
        env = {**os.environ, "TOXISERVE_URL": server.url, "TOXISERVE_ADMIN_KEY": ADMIN_KEY}
        command = [str(BIN / "toxiserve"), "rollout", "plan", "status", "--wait", "--poll-seconds", "0.2"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as waiting:
            live = waiting.stderr.readline()
            assert live.startswith("step 1/2 at 10 %, ") and "latency" in live and "; next " in live, live
            aborted = cli("plan", "abort", "--reason", "changed my mind")
            assert aborted.returncode == 0 and "aborted" in aborted.stdout and "changed my mind" in aborted.stdout
            out, _ = waiting.communicate(timeout=60)
        assert waiting.returncode == 3 and "outcome   aborted" in out  # ended without a promotion
        history = [line for line in cli("history").stdout.splitlines() if "[hold]" not in line]  # holds interleave
        assert "[abort] canary_percent=0.0" in history[1] and "[start] canary=v2, canary_percent=10.0" in history[2]
        assert requests.post(f"{server.url}/predict", json={"text": "x"}, headers={"X-API-Key": API_KEY}).ok


def test_a_hung_store_mid_plan_holds_every_decision_and_the_plan_resumes(plan_models, tweets, private_redis):  # noqa: F811
    """Redis SIGSTOPped past the lease's life: serving goes on (failing open), nobody decides, the
    tallies wait in each process; on SIGCONT a controller takes the lease again and the plan
    finishes with exactly one decision per step."""
    process, url = private_redis
    with Server(plan_env(url, "toxiserve", plan_models)) as server:
        body = {"canary": "v6", "steps": [20, 100], "step_seconds": 3, "min_requests": 40, "interval_seconds": 0.5}
        # The hang itself slows whichever answers wait on the store (its timeout), on either arm and
        # unevenly across steps: latency then measures the fault injected here, not the canary (v6 is
        # v1), and once in five CI-like runs it rolled this identical canary back. The subject here
        # is what a hung store does to decisions, so the latency guardrail is off.
        body["guardrails"] = {"max_latency_ratio": None}
        started = start_plan(server.url, body)
        with Traffic([server.url], tweets) as traffic:
            time.sleep(1)
            process.send_signal(signal.SIGSTOP)
            time.sleep(3)  # six intervals: the lease (0.75 s) has long expired
            hung = requests.get(f"{server.url}/admin/rollout/plan", headers=ADMIN, timeout=30)
            process.send_signal(signal.SIGCONT)
            assert hung.status_code == 503 and hung.json()["error_code"] == "STORE_UNAVAILABLE"
            ended = finished(server.url)
        assert ended["status"] == "promoted", ended["outcome"]
        assert set(traffic.statuses) == {200}  # served throughout
        moves = [e["decision"] for e in decisions(server.url, started["id"]) if e["decision"] not in ("start", "hold")]
        assert moves == ["advance", "promote"]
        assert "Traceback" not in server.output()


def test_a_sighup_mid_plan_replaces_every_worker_and_the_plan_finishes(plan_models, tweets):
    """SIGHUP: gunicorn starts new workers and stops the old ones gracefully. The plan lives in the
    store, the old lease holder gives its lease up as it exits, and new workers finish the plan."""
    with Server(plan_env(isolated_store(), "toxiserve", plan_models)) as server:
        body = {"canary": "v6", "steps": [20, 50, 100], "step_seconds": 2, "min_requests": 40, "interval_seconds": 0.5}
        started = start_plan(server.url, body)
        with Traffic([server.url], tweets) as traffic:
            wait_for(lambda: plan(server.url)["step"] >= 1, PLAN_TIMEOUT, 0.2)
            old_workers = set(server.worker_pids())
            server.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: not old_workers & set(server.worker_pids()), PLAN_TIMEOUT, 0.2)
            ended = finished(server.url)
        assert ended["status"] == "promoted", ended["outcome"]
        assert set(traffic.statuses) <= {200, "dropped"} and traffic.statuses[200] > 0
        last = decisions(server.url, started["id"])[-1]
        assert last["decision"] == "promote" and int(last["controller"].split(":")[1]) not in old_workers
        assert "Traceback" not in server.output()
