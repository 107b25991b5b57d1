"""Rollout plans through the admin API on the Flask test client, on both stores: validation that
changes nothing, one plan at a time, abort, a hand on the rollout ending a plan, a whole plan
promoted from another app's traffic, the lease, a dead store, and the stores' own pieces."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time

import pytest

from service.store import open_store

from .conftest import AUTH, isolated_store
from .server import REPO_ROOT
from .test_rollout import ADMIN, admin_app, routed, wait_until

PLAN = "/admin/rollout/plan"


@pytest.fixture
def models(tmp_path):
    """The shipped models plus v6, a copy of v1 under another name: a canary as good as the stable."""
    root = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "models", root)
    shutil.copytree(root / "toxicity" / "v1", root / "toxicity" / "v6")
    manifest = json.loads((root / "toxicity" / "v6" / "manifest.json").read_text())
    (root / "toxicity" / "v6" / "manifest.json").write_text(json.dumps({**manifest, "version": "v6"}))
    return root


@pytest.fixture
def client(store_url, namespace, models):
    return admin_app(store_url, namespace, MODEL_DIR=str(models), ROLLOUT_POLL_SECONDS=0.05).test_client()


def history(client) -> list[dict]:
    return client.get("/admin/rollout/history", headers=ADMIN).json["history"]


def test_plan_endpoints_take_admin_keys_only(client):
    for method in ("get", "put", "delete"):
        assert getattr(client, method)(PLAN).status_code == 401
        refused = getattr(client, method)(PLAN, headers=AUTH, json={"canary": "v2"})
        assert refused.status_code == 403 and refused.json["error_code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    "body",
    [
        {"canary": "v9"},
        {"canary": "v1"},
        {"canary": "v2", "steps": [50, 10]},
        {"canary": "v2", "steps": [100]},
        {"canary": "v2", "steps": [0, 50]},
        {"canary": "v2", "guardrails": {"max_cpu": 1}},
        {"canary": "v2", "interval_seconds": 0},
        {"steps": [10]},
        {},
    ],
)
def test_an_unusable_plan_is_refused_and_changes_nothing(client, body):
    before = client.get("/admin/rollout", headers=ADMIN).json
    refused = client.put(PLAN, json=body, headers=ADMIN)
    assert refused.status_code == 422 and refused.json["error_code"] == "INVALID_ROLLOUT", refused.json
    assert client.get("/admin/rollout", headers=ADMIN).json == before
    assert len(history(client)) == 1
    assert client.get(PLAN, headers=ADMIN).status_code == 404


def test_start_one_plan_at_a_time_then_abort(client):
    assert client.get(PLAN, headers=ADMIN).json["error_code"] == "NOT_FOUND"
    started = client.put(PLAN, json={"canary": "v6", "steps": [5, 50, 100], "reason": "v6 trial"}, headers=ADMIN)
    assert started.status_code == 200, started.json
    shown = started.json
    assert (shown["status"], shown["canary"], shown["stable"], shown["steps"]) == ("running", "v6", "v1", [5, 50, 100])
    assert (shown["step_seconds"], shown["min_requests"], shown["interval_seconds"]) == (60, 100, 10)
    assert shown["guardrails"]["max_latency_ratio"] == 2.0 and shown["guardrails"]["min_feedback"] is None
    assert {check["guardrail"]: check["status"] for check in shown["evaluation"]} == {
        "error_rate": "insufficient",
        "latency": "insufficient",
        "score_psi": "insufficient",
        "feedback_f1": "off",
        "shadow_agreement": "off",
    }
    state = client.get("/admin/rollout", headers=ADMIN).json
    assert (state["canary"], state["canary_percent"], state["revision"]) == ("v6", 5.0, 2)
    entry = history(client)[0]
    assert (entry["decision"], entry["plan"], entry["reason"]) == ("start", shown["id"], "v6 trial")
    again = client.put(PLAN, json={"canary": "v2"}, headers=ADMIN)
    assert again.status_code == 409 and again.json["error_code"] == "PLAN_RUNNING"
    aborted = client.delete(PLAN, json={"reason": "not today"}, headers=ADMIN)
    assert aborted.status_code == 200 and aborted.json["status"] == "aborted"
    assert aborted.json["outcome"]["reason"] == "not today"
    assert client.get("/admin/rollout", headers=ADMIN).json["canary_percent"] == 0.0
    assert history(client)[0]["decision"] == "abort"
    assert client.delete(PLAN, headers=ADMIN).status_code == 404
    assert client.put(PLAN, json={"canary": "v2"}, headers=ADMIN).status_code == 200  # a new one may start


def test_a_hand_on_the_share_ends_the_plan_a_shadow_does_not(client):
    client.put(PLAN, json={"canary": "v6"}, headers=ADMIN)
    assert client.put("/admin/rollout", json={"shadow": "v2", "shadow_percent": 10}, headers=ADMIN).status_code == 200
    assert client.get(PLAN, headers=ADMIN).json["status"] == "running"
    assert client.get(PLAN, headers=ADMIN).json["evaluation"][-1]["status"] == "insufficient"  # shadow counts now
    client.put("/admin/rollout", json={"canary_percent": 30}, headers=ADMIN)
    ended = client.get(PLAN, headers=ADMIN).json
    assert ended["status"] == "aborted" and "changed by hand (ops) at revision 4" in ended["outcome"]["reason"]


def test_a_plan_is_promoted_from_another_apps_traffic(store_url, namespace, models, client):
    other = admin_app(store_url, namespace, MODEL_DIR=str(models), ROLLOUT_POLL_SECONDS=0.05).test_client()
    body = {"canary": "v6", "steps": [50, 100], "step_seconds": 0, "min_requests": 20, "interval_seconds": 0.2}
    started = client.put(PLAN, json=body, headers=ADMIN).json
    wait_until(lambda: routed(other, 1, f"w{time.monotonic()}")[0].headers["X-Rollout-Revision"] == "2")

    def promoted() -> bool:
        routed(other, 10, f"p{time.monotonic()}")
        return client.get(PLAN, headers=ADMIN).json["status"] != "running"

    wait_until(promoted, timeout=60)
    ended = client.get(PLAN, headers=ADMIN).json
    assert ended["status"] == "promoted", ended["outcome"]
    moves = [e for e in history(client) if e.get("plan") == started["id"] and e["decision"] != "hold"]
    assert [e["decision"] for e in moves] == ["promote", "advance", "start"]
    assert moves[0]["change"] == {"stable": "v6", "canary": "v1", "canary_percent": 0.0}
    assert all(e["evidence"]["canary_requests"] >= 20 for e in moves[:2])


def test_the_lease_has_one_holder_until_it_expires_or_is_released(store_url, namespace):
    leases = open_store(store_url, namespace).leases
    assert leases.acquire("c", "a", 30) and leases.acquire("c", "a", 30)  # taken, then extended
    assert not leases.acquire("c", "b", 30) and leases.holder("c")[0] == "a"
    leases.release("c", "b")  # not b's to release
    assert leases.holder("c")[0] == "a"
    leases.release("c", "a")
    assert leases.holder("c") is None and leases.acquire("c", "b", 0.2)
    time.sleep(0.3)  # past its expiry (a logical bound, not a speed claim)
    assert leases.holder("c") is None and leases.acquire("c", "a", 30)


def test_evidence_adds_up_across_flushes_and_processes(store_url, namespace):
    evidence = open_store(store_url, namespace).evidence
    evidence.add({3: {"canary|answered": 2, "stable|answered": 5}})
    evidence.add({3: {"canary|answered": 1}, 4: {"canary|errors": 1}})
    assert evidence.read(3, 4) == {3: {"canary|answered": 3, "stable|answered": 5}, 4: {"canary|errors": 1}}
    assert evidence.read(5, 9) == {}


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_dead_store_refuses_plans_and_keeps_the_evidence(mode):
    client = admin_app("redis://127.0.0.1:1/0", STORE_FAILURE_MODE=mode).test_client()
    for method in ("get", "put", "delete"):
        refused = getattr(client, method)(PLAN, json={"canary": "v2"} if method == "put" else None, headers=ADMIN)
        assert refused.status_code == 503 and refused.json["error_code"] == "STORE_UNAVAILABLE"
    service = client.application.extensions["toxiserve"]
    service.evidence.answered(1, "canary", 0.002, [0.3])
    assert service.evidence.flush() is False and service.evidence._pending[1]["/canary|answered"] == 1
    service.controller.tick()  # nothing to decide on, and no exception


def test_an_old_history_table_is_moved_in_order(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE rollout_history (namespace TEXT, revision INTEGER, entry TEXT)")
        for revision in (2, 1):
            conn.execute(
                "INSERT INTO rollout_history VALUES ('toxiserve', ?, ?)", (revision, json.dumps({"r": revision}))
            )
    store = open_store(f"sqlite:///{path}", "toxiserve")
    assert [{"r": e["r"]} for e in store.rollout.history(10)] == [{"r": 2}, {"r": 1}]
    store.rollout.record_hold({"r": "hold"})
    assert store.rollout.history(10)[0]["r"] == "hold"


def test_a_pickle_that_cannot_load_is_refused_not_a_500(namespace, models):
    import hashlib
    import zlib

    from .bad_canaries import save_wrapped
    from .faulty_pipelines import Sleeps

    save_wrapped(models, "v7", lambda pipeline: Sleeps(pipeline, 0))
    # The class it names no longer imports (same-length name, so the pickle stays well-formed);
    # the manifest's checksum is made to match, so only unpickling can fail.
    pickle_path = models / "toxicity" / "v7" / "model.joblib"
    data = zlib.decompress(pickle_path.read_bytes()).replace(b"faulty_pipelines", b"vanished_modules")
    pickle_path.write_bytes(zlib.compress(data))
    manifest_path = models / "toxicity" / "v7" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "sha256": hashlib.sha256(pickle_path.read_bytes()).hexdigest()}))
    client = admin_app(isolated_store(), namespace, MODEL_DIR=str(models)).test_client()
    refused = client.put(PLAN, json={"canary": "v7"}, headers=ADMIN)
    assert refused.status_code == 422 and "cannot unpickle" in refused.json["message"], refused.json
    assert "ModuleNotFoundError" in refused.json["message"]


def test_the_history_keeps_its_newest_entries_and_every_recent_admin_change(store_url, namespace, monkeypatch):
    """The history is bounded (HISTORY_KEEP), newest kept; the controller's entries never push an
    admin change out (admin changes have a bound of their own)."""
    from service.store import redis as redis_store
    from service.store import sqlite as sqlite_store

    for module in (redis_store, sqlite_store):
        monkeypatch.setattr(module, "HISTORY_KEEP", 3)
    rollout = open_store(store_url, namespace).rollout
    assert rollout.write(0, {"revision": 1}, {"n": 0, "by": "ops"})
    for n in range(1, 5):  # holds of four different plans: nothing to fold
        rollout.record_hold({"n": n, "by": "controller", "decision": "hold", "plan": f"p{n}", "revision": 1, "at": "t"})
    assert rollout.write(1, {"revision": 2}, {"n": 5, "by": "ops"})
    assert [e["n"] for e in rollout.history(10)] == [5, 4, 3, 0]
    newest_two = rollout.history(2)
    assert [e["n"] for e in newest_two] == [5, 4]
    assert [e["n"] for e in rollout.history(10, before=newest_two[1]["id"])] == [3, 0]
    for n in range(6, 9):
        assert rollout.write(n - 4, {"revision": n - 3}, {"n": n, "by": "ops"})
    assert [e["n"] for e in rollout.history(10)] == [8, 7, 6]


def test_a_steps_holds_fold_into_one_entry_and_the_history_pages(store_url, namespace):
    rollout = open_store(store_url, namespace).rollout
    assert rollout.write(0, {"revision": 1}, {"by": "ops", "reason": "by hand"})
    hold = {"decision": "hold", "plan": "p1", "revision": 1, "by": "controller"}
    for n in range(500):  # 50 s of holds at interval_seconds 0.1: once, 500 entries pushed out the rest
        rollout.record_hold({**hold, "at": f"t{n:03d}", "reason": f"waiting {n}"})
    rollout.record_hold({**hold, "revision": 2, "at": "t500", "reason": "next step"})
    newest, folded, by_hand = rollout.history(10)
    assert (newest["reason"], newest.get("holds", 1)) == ("next step", 1)
    assert (folded["reason"], folded["holds"], folded["since"], folded["at"]) == ("waiting 499", 500, "t000", "t499")
    assert by_hand["by"] == "ops"  # the admin change is still there
    assert newest["id"] > folded["id"] > by_hand["id"]
    assert rollout.history(1) == [newest] and rollout.history(1, before=newest["id"]) == [folded]
    assert rollout.history(5, before=folded["id"]) == [by_hand] and rollout.history(5, before=by_hand["id"]) == []
