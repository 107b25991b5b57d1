"""The rollout steered while serving, through the admin API on the Flask test client, on both stores:
state in the store (seeded once), compare-and-set, validation that changes nothing, promote and
rollback, history, versioned paths, hot-loaded versions and shadow scoring."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from shared_features import resolve_params
from shared_features.dataset import read_labeled
from shared_features.training import train_model

from .conftest import AUTH, isolated_store, make_app, post
from .server import REPO_ROOT
from .test_canary import binomial_bounds

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}


def admin_app(store_url, namespace="toxiserve", **overrides):
    return make_app(STORE_URL=store_url, STORE_NAMESPACE=namespace, ADMIN_KEYS=f"ops:{ADMIN_KEY}", **overrides)


def wait_until(condition, timeout: float = 10.0):
    """Poll `condition` until it holds (a generous bound for a slow machine, not a speed claim)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def routed(client, n: int, prefix: str = "r") -> list:
    return [post(client, "/predict", {"text": "route me", "request_id": f"{prefix}-{i}"}) for i in range(n)]


@pytest.fixture
def pair(store_url, namespace):
    """Two apps (two 'hosts') on one store; the second reads the state every 50 ms."""
    first = admin_app(store_url, namespace).test_client()
    second = admin_app(store_url, namespace, ROLLOUT_POLL_SECONDS=0.05).test_client()
    return first, second


def test_the_settings_seed_the_state_once_then_the_store_wins(pair, store_url, namespace):
    first, _ = pair
    state = first.get("/admin/rollout", headers=ADMIN).json
    assert state["revision"] == 1 and (state["stable"], state["canary"], state["canary_percent"]) == ("v1", "v2", 10.0)
    assert state["updated_by"] == "settings"
    assert first.put("/admin/rollout", json={"canary_percent": 50}, headers=ADMIN).status_code == 200
    later = admin_app(store_url, namespace, CANARY_PERCENT=1).test_client()  # a restart with other settings
    assert later.get("/admin/rollout", headers=ADMIN).json["canary_percent"] == 50.0
    versions = [r.json["model_version"] for r in routed(later, 400)]
    low, high = binomial_bounds(400, 0.5)
    assert low <= versions.count("v2") <= high


def test_another_host_follows_a_change_and_routes_under_one_revision(pair):
    first, second = pair
    assert {r.headers["X-Rollout-Revision"] for r in routed(second, 20)} == {"1"}
    changed = first.put("/admin/rollout", json={"canary_percent": 100, "reason": "all in"}, headers=ADMIN)
    assert changed.status_code == 200 and changed.json["revision"] == 2
    wait_until(lambda: post(second, "/predict", {"text": "x"}).headers["X-Rollout-Revision"] == "2")
    answers = routed(second, 200, "after")
    assert {r.headers["X-Rollout-Revision"] for r in answers} == {"2"}
    assert {r.json["model_version"] for r in answers} == {"v2"}


def test_sticky_within_a_revision(pair):
    first, _ = pair
    first.put("/admin/rollout", json={"canary_percent": 50}, headers=ADMIN)
    by_id = {f"s-{i}": post(first, "/predict", {"text": "a"}, {"X-Request-ID": f"s-{i}"}).json for i in range(40)}
    again = {f"s-{i}": post(first, "/predict", {"text": "a"}, {"X-Request-ID": f"s-{i}"}).json for i in range(40)}
    assert {k: v["model_version"] for k, v in by_id.items()} == {k: v["model_version"] for k, v in again.items()}


def test_admin_keys_are_not_prediction_keys(pair):
    first, _ = pair
    for path in ("/admin/rollout", "/admin/rollout/history", "/admin/rollout/shadow"):
        assert first.get(path).status_code == 401
        refused = first.get(path, headers=AUTH)
        assert refused.status_code == 403 and refused.json["error_code"] == "FORBIDDEN"
        assert first.get(path, headers=ADMIN).status_code == 200
    assert first.put("/admin/rollout", json={"canary_percent": 1}, headers=AUTH).status_code == 403
    assert post(first, "/predict", {"text": "x"}, {"X-API-Key": ADMIN_KEY}).status_code == 401  # and vice versa


def test_without_admin_keys_nobody_administers():
    client = make_app().test_client()
    assert client.get("/admin/rollout", headers=ADMIN).status_code == 401
    assert client.get("/admin/rollout", headers=AUTH).status_code == 403


def test_compare_and_set(pair):
    first, second = pair
    ok = first.put("/admin/rollout", json={"canary_percent": 20, "expected_revision": 1}, headers=ADMIN)
    assert ok.status_code == 200 and ok.json["revision"] == 2
    stale = second.put("/admin/rollout", json={"canary_percent": 30, "expected_revision": 1}, headers=ADMIN)
    assert stale.status_code == 409 and stale.json["error_code"] == "REVISION_CONFLICT"
    assert stale.json["details"] == {"revision": 2}
    assert first.get("/admin/rollout", headers=ADMIN).json["canary_percent"] == 20.0


@pytest.mark.parametrize(
    "change",
    [
        {"canary": "v9"},
        {"canary_percent": 101},
        {"shadow_percent": -1},
        {"canary_percent": "lots"},
        {"stable": ""},
        {"reason": "only a reason"},
        {"bogus": 1},
    ],
)
def test_an_unusable_change_is_refused_and_changes_nothing(pair, change):
    first, _ = pair
    before = first.get("/admin/rollout", headers=ADMIN).json
    refused = first.put("/admin/rollout", json=change, headers=ADMIN)
    assert refused.status_code in (400, 422), refused.json
    assert refused.json["error_code"] in ("INVALID_ROLLOUT", "INVALID_PAYLOAD")
    assert first.get("/admin/rollout", headers=ADMIN).json == before
    assert len(first.get("/admin/rollout/history", headers=ADMIN).json["history"]) == 1


@pytest.fixture
def model_dir(tmp_path, tiny_csv):
    """The shipped models plus v8 (trained here) and v9 (a copy of v8 whose scorer was tampered with)."""
    root = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "models", root)
    train_model(read_labeled(tiny_csv), "toxicity", "v8", resolve_params("word-ngrams"), root, threshold=0.5)
    shutil.copytree(root / "toxicity" / "v8", root / "toxicity" / "v9")
    manifest = json.loads((root / "toxicity" / "v9" / "manifest.json").read_text())
    (root / "toxicity" / "v9" / "manifest.json").write_text(json.dumps({**manifest, "version": "v9"}))
    with open(root / "toxicity" / "v9" / "scorer.npz", "ab") as handle:
        handle.write(b"\0")
    return root


def test_a_new_version_is_hot_loaded_and_a_tampered_one_refused(store_url, namespace, model_dir):
    first = admin_app(store_url, namespace, MODEL_DIR=str(model_dir)).test_client()
    second = admin_app(store_url, namespace, MODEL_DIR=str(model_dir), ROLLOUT_POLL_SECONDS=0.05).test_client()
    tampered = first.put("/admin/rollout", json={"canary": "v9"}, headers=ADMIN)
    assert tampered.status_code == 422 and "checksum mismatch" in tampered.json["message"]
    assert first.get("/admin/rollout", headers=ADMIN).json["revision"] == 1
    assert first.put("/admin/rollout", json={"canary": "v8", "canary_percent": 100}, headers=ADMIN).status_code == 200
    assert {r.json["model_version"] for r in routed(first, 20)} == {"v8"}
    wait_until(lambda: post(second, "/predict", {"text": "x"}).json["model_version"] == "v8")
    assert second.get("/readyz").status_code == 200
    # v2 is no longer named: unloaded, and its versioned path says so instead of serving another model.
    gone = post(second, "/v2/predict", {"text": "x"})
    assert gone.status_code == 404 and "not loaded" in gone.json["message"]
    assert post(second, "/v1/predict", {"text": "x"}).json["model_version"] == "v1"


def test_too_many_versions_are_refused(pair):
    first, _ = pair
    refused = first.put("/admin/rollout", json={"shadow": "v1"}, headers=ADMIN)  # still 2 versions: fine
    assert refused.status_code == 200
    app = admin_app(first.application.config["STORE_URL"], "other", MAX_LOADED_VERSIONS=1).test_client()
    refused = app.put("/admin/rollout", json={"canary_percent": 5}, headers=ADMIN)
    assert refused.status_code == 422 and "TOXISERVE_MAX_LOADED_VERSIONS" in refused.json["message"]


def test_promote_rollback_and_history(pair):
    first, _ = pair
    first.put("/admin/rollout", json={"canary_percent": 25, "reason": "a quarter"}, headers=ADMIN)
    promoted = first.post("/admin/rollout/promote", json={"reason": "v2 is better"}, headers=ADMIN)
    assert promoted.status_code == 200
    assert (promoted.json["stable"], promoted.json["canary"], promoted.json["canary_percent"]) == ("v2", "v1", 0.0)
    assert {r.json["model_version"] for r in routed(first, 50)} == {"v2"}
    assert post(first, "/v1/predict", {"text": "x"}).json["model_version"] == "v1"  # pinned paths keep their model
    first.put("/admin/rollout", json={"canary_percent": 40}, headers=ADMIN)
    rolled = first.post("/admin/rollout/rollback", headers=ADMIN)
    assert rolled.status_code == 200 and rolled.json["canary_percent"] == 0.0 and rolled.json["canary"] == "v1"
    history = first.get("/admin/rollout/history", headers=ADMIN).json["history"]
    assert [entry["revision"] for entry in history] == [5, 4, 3, 2, 1]
    assert history[2] == {
        "revision": 3,
        "at": history[2]["at"],
        "by": "ops",
        "change": {"stable": "v2", "canary": "v1", "canary_percent": 0.0},
        "reason": "v2 is better",
        "id": history[2]["id"],
    }
    assert [entry["id"] for entry in history] == sorted((entry["id"] for entry in history), reverse=True)
    nothing = first.post("/admin/rollout/promote", headers=ADMIN)
    assert nothing.status_code == 200  # v1 (canary, 0 %) becomes stable again: promote is symmetric
    first.put("/admin/rollout", json={"canary": "v1"}, headers=ADMIN)
    same = first.post("/admin/rollout/promote", headers=ADMIN)
    assert same.status_code == 422 and same.json["error_code"] == "INVALID_ROLLOUT"


def test_shadow_scoring_is_compared_and_never_answered(pair):
    first, _ = pair
    first.put("/admin/rollout", json={"canary_percent": 0, "shadow": "v2", "shadow_percent": 100}, headers=ADMIN)
    answers = routed(first, 40, "shadowed")
    assert {r.json["model_version"] for r in answers} == {"v1"}  # the client only ever sees the primary
    assert all(set(r.json) == {"label", "model_version", "request_id", "score"} for r in answers)

    def compared():
        pairs = first.get("/admin/rollout/shadow", headers=ADMIN).json["pairs"]
        return pairs and pairs[0]["compared"] >= 40

    wait_until(compared)
    summary = first.get("/admin/rollout/shadow", headers=ADMIN).json
    pair_summary = summary["pairs"][0]
    assert (pair_summary["primary"], pair_summary["shadow"]) == ("v1", "v2")
    assert 0 <= pair_summary["agreement"] <= 1 and pair_summary["mean_abs_score_difference"] > 0
    assert summary["shadow"] == "v2" and summary["shadow_percent"] == 100.0


def test_rollout_metrics(pair):
    first, _ = pair
    first.put("/admin/rollout", json={"canary_percent": 35}, headers=ADMIN)
    text = first.get("/metrics").get_data(as_text=True)
    assert "rollout_revision 2.0" in text and "rollout_canary_percent 35.0" in text


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_dead_store_serves_the_seed_and_refuses_changes(mode):
    """With the store unreachable the process starts, routes under the seed, and an admin write is a
    clear 503 (a change must never pass unrecorded), whichever way the store policy fails."""
    client = admin_app("redis://127.0.0.1:1/0", STORE_FAILURE_MODE=mode, RATE_LIMIT="").test_client()
    routed_answer = post(client, "/predict", {"text": "still serving"})
    if mode == "open":
        assert routed_answer.status_code == 200 and routed_answer.headers["X-Rollout-Revision"] == "1"
    refused = client.put("/admin/rollout", json={"canary_percent": 50}, headers=ADMIN)
    assert refused.status_code == 503 and refused.json["error_code"] == "STORE_UNAVAILABLE"
    assert client.get("/admin/rollout/history", headers=ADMIN).status_code == 503


def test_a_host_that_cannot_load_a_named_version_keeps_serving_and_counts_it(store_url, namespace, model_dir):
    from service.observability import metrics

    with_v3 = admin_app(store_url, namespace, MODEL_DIR=str(model_dir)).test_client()
    without_v3 = admin_app(store_url, namespace, ROLLOUT_POLL_SECONDS=0.05).test_client()  # the shipped models
    failures = metrics.ROLLOUT_ADOPT_FAILURES._value.get()
    assert with_v3.put("/admin/rollout", json={"canary": "v8"}, headers=ADMIN).status_code == 200
    wait_until(
        lambda: post(without_v3, "/predict", {"text": "x"}) and metrics.ROLLOUT_ADOPT_FAILURES._value.get() > failures
    )
    answers = routed(without_v3, 20, "old")
    assert {r.status_code for r in answers} == {200} and {r.headers["X-Rollout-Revision"] for r in answers} == {"1"}


def test_the_history_api_pages_by_id():
    client = admin_app(isolated_store()).test_client()
    for percent in (10, 20, 30, 40):
        assert client.put("/admin/rollout", json={"canary_percent": percent}, headers=ADMIN).status_code == 200
    pages, before = [], None
    while True:
        query = "limit=2" + (f"&before={before}" if before else "")
        page = client.get(f"/admin/rollout/history?{query}", headers=ADMIN).json
        pages.append([entry["revision"] for entry in page["history"]])
        before = page["next_before"]
        if before is None:
            break
    assert pages == [[5, 4], [3, 2], [1]]
    for bad in ("limit=0", "limit=1001", "limit=x", "before=-1", "before=1.5", "limit=%D9%A3"):
        answer = client.get(f"/admin/rollout/history?{bad}", headers=ADMIN)
        assert answer.status_code == 422 and answer.json["error_code"] == "UNPROCESSABLE", bad
