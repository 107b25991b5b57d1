"""The five rollout attacks of the adversarial probe (#25), replayed on a real gunicorn with an
ordinary key ("mallory") beside honest labelled traffic (the "tests" key, the only labeler). Each
attack once decided the plan; now the verdict is the one honest traffic alone gives: the bad canary
(v10, trained on inverted labels) is rolled back, and the good one (v2) is promoted.

The attacker does what the probe did: it picks request ids whose *unkeyed* sha256 falls on the
canary arm (the old router), labels answers to suit itself (also on /v1/predict, never routed),
sends texts on which the two versions disagree to the arm it wants, and sends OIP batches of 300
texts to the canary's ids, and batches that overrun the deadline on either arm. Those failures once
rolled a good canary back when the first of them landed on the canary by chance (each key's errors
are now compared with its own stable rate), and, as a second key's few requests, they weighed the
honest key down until the plan held past max_hold and rolled back (a key with no answers now
weighs no one down).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid

import pytest
import requests

from .conftest import isolated_store
from .server import Server
from .test_plan_gunicorn import (  # noqa: F401 - fixtures
    PLAN_TIMEOUT,
    Traffic,
    decisions,
    finished,
    plan_env,
    plan_models,
    start_plan,
    tweets,
)
from .test_rollout import ADMIN

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]
MALLORY_KEY = "mallory-key-0123456789"
MALLORY = {"X-API-Key": MALLORY_KEY}
# The default guardrails, and the min_requests that docs/rollouts.md asks of a plan facing such a
# client: at the default 100, a flood of chosen texts pushes a good canary's score PSI past its
# bound in about 1 % of evaluations (simulated), and once rolled one back here.
PLAN = {
    "steps": [25, 50, 100],
    "step_seconds": 3,
    "min_requests": 300,
    "interval_seconds": 0.5,
}


def unkeyed_bucket(request_id: str) -> int:
    """The old router's bucket: sha256 of the id, no secret, so any client could compute it."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") % 10_000


def unkeyed_id(low: int, high: int) -> str:
    """An id the old router put in buckets low..high-1 (below 2,500: the canary at 25 %)."""
    while True:
        candidate = uuid.uuid4().hex
        if low <= unkeyed_bucket(candidate) < high:
            return candidate


def unkeyed_canary_id(share: float) -> str:
    return unkeyed_id(0, round(share * 100))


class Attacker:
    """`attack(session, url)` in a loop on `threads` threads (more than the honest clients have), until
    the plan ends."""

    def __init__(self, url: str, attack, threads: int = 5) -> None:
        self.url, self.attack, self.stop = url, attack, threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def run(self) -> None:
        deadline = time.monotonic() + PLAN_TIMEOUT
        with requests.Session() as session:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.attack(session, self.url)
                self.sent += 1

    def __enter__(self) -> Attacker:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def routed(session, url: str, text: str, request_id: str) -> dict | None:
    answer = session.post(f"{url}/predict", json={"text": text, "request_id": request_id}, headers=MALLORY)
    return answer.json() if answer.status_code == 200 else None


def label(session, url: str, request_id: str, value: str) -> None:
    session.post(f"{url}/v1/feedback", json={"request_id": request_id, "label": value}, headers=MALLORY)


def flip(value: str) -> str:
    return "clean" if value == "toxic" else "toxic"


def labels_that_suit_the_canary(canary: str, labelled):
    """Attack 1: canary-arm ids, each answer labelled as the canary gave it, and /v1 answers wrong."""
    rows = iter(labelled * 20)

    def attack(session, url):
        text, _ = next(rows)
        request_id = unkeyed_canary_id(25)
        answer = routed(session, url, text, request_id)
        if answer is not None:
            given = answer["label"] if answer["model_version"] == canary else flip(answer["label"])
            label(session, url, request_id, given)
        direct_id = uuid.uuid4().hex
        direct = session.post(f"{url}/v1/predict", json={"text": text, "request_id": direct_id}, headers=MALLORY)
        if direct.status_code == 200:
            label(session, url, direct_id, flip(direct.json()["label"]))

    return attack


def false_labels(canary: str, labelled):
    """Attack 2: the canary's answers labelled against the truth, the stable's with it."""
    rows = iter(labelled * 20)

    def attack(session, url):
        text, truth = next(rows)
        request_id = uuid.uuid4().hex
        answer = routed(session, url, text, request_id)
        if answer is not None:
            label(session, url, request_id, flip(truth) if answer["model_version"] == canary else truth)

    return attack


def arm_steered_texts(labelled):
    """Attack 3: toxic labelled to (what were) canary ids, clean ones to stable ids: the arms' score
    histograms drift apart when the client chooses each arm's texts."""
    toxic = iter([text for text, truth in labelled if truth == "toxic"] * 20)
    clean = iter([text for text, truth in labelled if truth == "clean"] * 50)

    def attack(session, url):
        routed(session, url, next(toxic), unkeyed_canary_id(25))
        routed(session, url, next(clean), unkeyed_id(5000, 10_000))  # the old router's stable arm below 50 %

    return attack


def oip_batches_on_canary_ids(labelled):
    """Attack 4: batches of 300 texts through the OIP router, on canary ids: once one slow sample each."""
    texts = [text for text, _ in labelled[:300]]
    body = {"inputs": [{"name": "text", "shape": [300], "datatype": "BYTES", "data": texts}]}

    def attack(session, url):
        session.post(f"{url}/v2/models/toxicity/infer", json={**body, "id": unkeyed_canary_id(25)}, headers=MALLORY)

    return attack


def deadline_bound_batches(labelled):
    """Attack 5: batches too long for the deadline, on canary ids: once the canary's errors alone."""
    texts = [((text + " ") * 40)[:2000] for text, _ in labelled[:1000]]

    def attack(session, url):
        session.post(
            f"{url}/v2/models/toxicity/infer",
            json={
                "id": unkeyed_canary_id(25),
                "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
            },
            headers=MALLORY,
        )

    return attack


# name: (canary, guardrails, the attack, the honest verdict). The first two isolate the labels (as
# the probe's texts matched the score histograms, PSI is off there).
LABELS_ONLY = {"min_feedback": 40, "max_score_psi": None}
ATTACKS = {
    "labels-that-suit-the-canary": ("v10", LABELS_ONLY, labels_that_suit_the_canary, "rolled_back"),
    "false-labels": ("v2", LABELS_ONLY, false_labels, "promoted"),
    "arm-steered-texts": ("v2", {}, lambda canary, labelled: arm_steered_texts(labelled), "promoted"),
    "oip-batches-on-canary-ids": ("v2", {}, lambda canary, labelled: oip_batches_on_canary_ids(labelled), "promoted"),
    "deadline-bound-batches": ("v2", {}, lambda canary, labelled: deadline_bound_batches(labelled), "promoted"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attack_does_not_change_the_verdict(name, plan_models, tweets):  # noqa: F811 - fixtures
    canary, guardrails, make_attack, verdict = ATTACKS[name]
    attack = make_attack(canary, tweets)
    env = plan_env(isolated_store(), "toxiserve", plan_models)
    env["TOXISERVE_API_KEYS"] += f",mallory:{MALLORY_KEY}"
    if name == "deadline-bound-batches":  # its batches overrun this deadline; the others keep the default
        env["TOXISERVE_REQUEST_DEADLINE"] = "0.3"
    with Server(env) as server:
        started = start_plan(server.url, {"canary": canary, **PLAN, "guardrails": guardrails})
        feedback = "min_feedback" in guardrails
        # Two threads of batches, each running to the deadline: as many as there are workers.
        threads = 2 if name == "deadline-bound-batches" else 5
        with (
            Traffic([server.url], tweets, feedback=feedback) as honest,
            Attacker(server.url, attack, threads) as attacker,
        ):
            try:
                ended = finished(server.url)
            except AssertionError:
                shown = requests.get(server.url + "/admin/rollout/plan", headers=ADMIN, timeout=30).json()
                raise AssertionError(f"{name}: no decision ({honest.statuses} honest answers): {shown}") from None
        entries = decisions(server.url, started["id"])
    assert attacker.sent >= 5, "the attack never got going"
    assert ended["status"] == verdict, (name, ended["outcome"])
    print(f"{name}: {verdict} after {len(entries)} decisions, {attacker.sent} attacks: {ended['outcome']['reason']}")
