"""Feedback joined to what the service answered, and quality per version with intervals, on both stores."""

from __future__ import annotations

import os
import subprocess

import pytest
import requests

from service.rollout.quality import report, wilson

from .conftest import API_KEY, AUTH, OTHER_KEY, make_app, post
from .server import BIN, Server
from .test_rollout import ADMIN, admin_app

TEXTS = ["you are an idiot", "have a lovely day", "what a stupid take", "thanks, great work"]


def label(client, request_id: str, value: str, key: str = API_KEY):
    return client.post("/v1/feedback", json={"request_id": request_id, "label": value}, headers={"X-API-Key": key})


@pytest.fixture
def client(store_url, namespace):
    return admin_app(store_url, namespace).test_client()


def test_a_label_is_joined_to_the_answer_the_service_gave(client):
    answer = post(client, "/predict", {"text": TEXTS[0], "request_id": "f-1"}).json
    accepted = label(client, "f-1", "clean")
    assert accepted.status_code == 202
    assert accepted.json == {
        "request_id": "f-1",
        "status": "accepted",
        "model_version": answer["model_version"],
        "predicted": answer["label"],
        "counts_as": "untrusted",  # a routed answer, but this key has no labeler scope
    }
    again = label(client, "f-1", "toxic")
    assert again.status_code == 409 and again.json["error_code"] == "FEEDBACK_CONFLICT"


def test_unknown_foreign_unidentified_and_batch_answers_are_refused(client):
    post(client, "/v1/predict", {"text": TEXTS[1], "request_id": "mine"})
    assert label(client, "never-sent", "toxic").json["error_code"] == "UNKNOWN_REQUEST"
    foreign = label(client, "mine", "toxic", key=OTHER_KEY)  # another key never touches this key's requests
    assert foreign.status_code == 404 and foreign.json["error_code"] == "UNKNOWN_REQUEST"
    generated = post(client, "/v1/predict", {"text": TEXTS[1]}).json["request_id"]  # no id sent: nothing kept
    assert label(client, generated, "toxic").status_code == 404
    post(client, "/v1/batch_predict", {"texts": TEXTS, "request_id": "a-batch"})
    batch = label(client, "a-batch", "toxic")
    assert batch.status_code == 422 and "one-text answers" in batch.json["message"]
    assert label(client, "mine", "maybe").json["error_code"] == "INVALID_PAYLOAD"
    assert client.post("/v1/feedback", json={"request_id": "mine", "label": "toxic"}).status_code == 401


def test_the_batch_form(client):
    for i in range(5):
        post(client, "/v1/predict", {"text": TEXTS[i % 4], "request_id": f"b-{i}"})
    items = [{"request_id": f"b-{i}", "label": "toxic"} for i in range(5)] + [{"request_id": "b-x", "label": "clean"}]
    answer = client.post("/v1/feedback", json={"items": items}, headers=AUTH)
    assert answer.status_code == 202 and answer.json["accepted"] == 5
    assert answer.json["results"][-1]["error_code"] == "UNKNOWN_REQUEST"
    too_many = [{"request_id": f"z-{i}", "label": "toxic"} for i in range(1001)]
    assert client.post("/v1/feedback", json={"items": too_many}, headers=AUTH).status_code == 422


def test_quality_counts_and_intervals_across_two_hosts_and_rollout_revisions(store_url, namespace):
    first = admin_app(store_url, namespace).test_client()
    second = admin_app(store_url, namespace).test_client()  # another host on the same store
    truth = {0: "toxic", 1: "clean", 2: "toxic", 3: "clean"}
    expected = {p: {"toxic": 0, "clean": 0} for p in ("toxic", "clean")}
    for i in range(12):
        host = (first, second)[i % 2]
        answer = post(host, "/v1/predict", {"text": TEXTS[i % 4], "request_id": f"q-{i}"}).json
        assert label(host, f"q-{i}", truth[i % 4]).status_code == 202
        expected[answer["label"]][truth[i % 4]] += 1
    quality = first.get("/v1/models/v1/quality", headers=AUTH).json
    assert quality["all_time"] == report(expected)
    assert quality["all_time"]["labels"] == 12 and quality["current_revision"]["labels"] == 12
    assert "Wilson" in quality["intervals"]
    first.put("/admin/rollout", json={"canary_percent": 20}, headers=ADMIN)  # a new step starts counting afresh
    after = second.get("/v1/models/v1/quality", headers=AUTH).json
    assert after["current_revision"]["revision"] == 2 and after["current_revision"]["labels"] == 0
    assert after["current_revision"]["accuracy"] == {"value": None, "interval": None, "insufficient": True, "n": 0}
    assert after["all_time"]["labels"] == 12
    assert first.get("/v1/models/v9/quality", headers=AUTH).status_code == 404
    scrape = first.get("/metrics").get_data(as_text=True)
    assert 'feedback_total{actual="toxic",model_version="v1",predicted="toxic"}' in scrape


def test_wilson_and_the_report_by_hand():
    assert wilson(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)  # the textbook example
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0 and wilson(0, 0) is None
    quality = report({"toxic": {"toxic": 40, "clean": 10}, "clean": {"toxic": 5, "clean": 45}})
    toxic = quality["classes"]["toxic"]
    assert toxic["precision"]["value"] == 0.8 and toxic["recall"]["value"] == round(40 / 45, 6)
    assert toxic["f1"]["value"] == round(80 / 95, 6) and quality["accuracy"]["value"] == 0.85
    low, high = quality["macro_f1"]["interval"]
    assert low < quality["macro_f1"]["value"] < high
    assert report({"toxic": {"toxic": 40, "clean": 10}, "clean": {"toxic": 5, "clean": 45}}) == quality  # seeded


def test_a_dead_store_is_503_not_unknown():
    client = make_app(STORE_URL="redis://127.0.0.1:1/0", STORE_FAILURE_MODE="open").test_client()
    refused = label(client, "anything", "toxic")
    assert refused.status_code == 503 and refused.json["error_code"] == "STORE_UNAVAILABLE"


@pytest.mark.gunicorn
def test_the_feedback_cli_against_a_real_server(tmp_path):
    from .conftest import isolated_store

    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_STORE_URL": isolated_store(),
        "TOXISERVE_RATE_LIMIT": "",
    }
    with Server(env) as server:
        for i in range(3):
            body = {"text": TEXTS[i], "request_id": f"cli-{i}"}
            assert requests.post(f"{server.url}/predict", json=body, headers=AUTH, timeout=10).status_code == 200
        labels = tmp_path / "labels.csv"
        labels.write_text("request_id,label\ncli-0,toxic\ncli-1,clean\ncli-2,toxic\n")
        cli_env = {**os.environ, "TOXISERVE_URL": server.url, "TOXISERVE_API_KEY": API_KEY}
        command = [str(BIN / "toxiserve"), "feedback", str(labels)]
        done = subprocess.run(command, capture_output=True, text=True, env=cli_env, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == "3 of 3 labels accepted"
        again = subprocess.run(command, capture_output=True, text=True, env=cli_env, timeout=60)
        assert again.returncode == 1 and again.stdout.strip() == "0 of 3 labels accepted"
        assert again.stderr.count("FEEDBACK_CONFLICT") == 3
        bad = tmp_path / "bad.csv"
        bad.write_text("id,verdict\nx,toxic\n")
        usage = subprocess.run(
            [str(BIN / "toxiserve"), "feedback", str(bad)], capture_output=True, text=True, env=cli_env
        )
        assert usage.returncode == 2


def test_a_hostile_body_is_a_clear_400_in_either_form(client):
    deep = "[" * 100_000 + "]" * 100_000
    for body in (deep, '{"items": ' + deep + "}"):
        answer = client.post("/v1/feedback", data=body, headers={**AUTH, "Content-Type": "application/json"})
        assert answer.status_code == 400 and answer.json["error_code"] == "INVALID_JSON"


def test_only_a_labelers_labels_on_routed_answers_count_at_the_answers_revision(store_url, namespace):
    """The probe's forged evidence: any key's labels counted, on direct answers too, at the revision
    current when the label arrived (so answers banked before a plan counted in it)."""
    client = admin_app(store_url, namespace, LABELER_KEYS="tests", CANARY_PERCENT=50).test_client()
    for i in range(6):  # banked under revision 1
        post(client, "/predict", {"text": TEXTS[i % 4], "request_id": f"banked-{i}"})
    client.put("/admin/rollout", json={"canary_percent": 40}, headers=ADMIN)  # revision 2: a new step
    post(client, "/predict", {"text": TEXTS[0], "request_id": "now"})
    post(client, "/v1/predict", {"text": TEXTS[0], "request_id": "named"})
    client.post("/predict", json={"text": TEXTS[0], "request_id": "theirs"}, headers={"X-API-Key": OTHER_KEY})
    kinds = [label(client, f"banked-{i}", "toxic").json["counts_as"] for i in range(6)]
    kinds += [label(client, "now", "toxic").json["counts_as"], label(client, "named", "toxic").json["counts_as"]]
    kinds.append(label(client, "theirs", "toxic", key=OTHER_KEY).json["counts_as"])
    assert kinds == ["evidence"] * 7 + ["direct", "untrusted"]
    versions = {v: client.get(f"/v1/models/{v}/quality", headers=AUTH).json for v in ("v1", "v2")}
    current = sum(q["current_revision"]["labels"] for q in versions.values())
    assert current == 3  # "now", "named" and "theirs" were answered under revision 2; the banked six under 1
    evidence = sum(q["rollout_evidence"]["labels"] for q in versions.values())
    assert evidence == 7 and sum(q["labels_by_kind"]["untrusted"] for q in versions.values()) == 1
    assert sum(q["all_time"]["labels"] for q in versions.values()) == 9  # every label is kept and shown


def test_labels_spend_the_keys_rate_limit(store_url, namespace):
    client = admin_app(store_url, namespace, RATE_LIMIT="8/minute").test_client()
    for i in range(4):
        post(client, "/v1/predict", {"text": TEXTS[0], "request_id": f"r-{i}"})
    assert label(client, "r-0", "toxic").status_code == 202  # 5 of 8 spent
    items = [{"request_id": f"r-{i}", "label": "toxic"} for i in (1, 2, 3)]
    assert client.post("/v1/feedback", json={"items": items}, headers=AUTH).status_code == 202  # 8 of 8
    refused = label(client, "never-sent", "toxic")
    assert (
        refused.status_code == 429 and refused.json["error_code"] == "RATE_LIMITED" and "Retry-After" in refused.headers
    )
