"""Guardrails and plan decisions as pure functions: each statistic against a computation by hand,
and each decision (hold, advance, promote, roll back) from evidence built here."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from service.rollout import guardrails
from service.rollout import plan as plans
from service.rollout.evidence import LATENCY_BUCKETS, SCORE_BINS, ArmEvidence, latency_bucket, quantile, score_bin


def arm(latencies=(), scores=(), errors: int = 0) -> ArmEvidence:
    latency, bins = [0] * LATENCY_BUCKETS, [0] * SCORE_BINS
    for seconds in latencies:
        latency[latency_bucket(seconds)] += 1
    for score in scores:
        bins[score_bin(score)] += 1
    return ArmEvidence(len(latencies), errors, latency, bins)


def test_latency_quantiles_come_within_a_bucket_of_the_true_ones():
    rng = random.Random(0)
    samples = [rng.lognormvariate(math.log(0.004), 0.6) for _ in range(5000)]
    true_p95 = sorted(samples)[int(0.95 * len(samples))]
    estimate = quantile(arm(samples).latency, 0.95)
    assert true_p95 / 2**0.25 <= estimate <= true_p95 * 2**0.25  # one bucket is 19 % wide
    assert quantile([0] * LATENCY_BUCKETS, 0.95) is None


def test_latency_fails_only_when_the_canary_is_significantly_slower():
    stable = arm([0.002] * 900)
    few_slow = guardrails.latency(arm([0.002] * 60 + [0.030] * 4), stable, 2.0, 40)
    assert few_slow["value"] > 2 and few_slow["status"] == "insufficient"  # p95 past the bound on 4 answers: hold
    assert few_slow["share_interval"][0] < 0.05 < few_slow["share_interval"][1]
    many_slow = guardrails.latency(arm([0.002] * 1000 + [0.030] * 200), stable, 2.0, 40)
    assert many_slow["status"] == "fail" and many_slow["canary_share_slower"] == pytest.approx(200 / 1200, abs=1e-6)
    assert guardrails.latency(arm([0.002] * 900), stable, 2.0, 40)["status"] == "pass"


def test_psi_by_hand():
    expected, actual = [50, 30, 20], [20, 30, 50]
    e = np.array(expected) + 0.5
    a = np.array(actual) + 0.5
    e, a = e / e.sum(), a / a.sum()
    assert guardrails.psi(actual, expected) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert guardrails.psi(expected, expected) == 0.0


def test_error_rate_waits_for_evidence_fails_early_and_passes():
    stable = arm([0.002] * 400)
    assert guardrails.error_rate(arm([0.002] * 10), stable, 0.01, 100)["status"] == "insufficient"
    failing = guardrails.error_rate(arm([0.002] * 10, errors=2), stable, 0.01, 100)
    assert failing["status"] == "fail" and failing["canary_errors"] == 2  # 2 > 1 % of 100: certain to fail
    assert guardrails.error_rate(arm([0.002] * 100, errors=1), stable, 0.01, 100)["status"] == "pass"
    assert guardrails.error_rate(arm([0.002] * 100), arm([0.002] * 10), 0.01, 100)["status"] == "insufficient"
    assert guardrails.error_rate(arm(), stable, None, 100)["status"] == "off"


def keyed(**by_key: tuple[int, int]) -> ArmEvidence:
    """An arm's (requests, errors) per API key."""
    errors = sum(e for _, e in by_key.values())
    answered = sum(r for r, _ in by_key.values()) - errors
    return ArmEvidence(answered, errors, [0] * LATENCY_BUCKETS, [0] * SCORE_BINS, requests_by_key=by_key)


def test_error_rate_compares_each_key_with_its_own_stable_rate():
    honest_stable = (900, 0)
    # A client whose batches overrun the deadline on both arms: its first failures land on the
    # canary before any on the stable arm. They hold the step; they do not roll it back.
    early = guardrails.error_rate(keyed(honest=(100, 0), batches=(6, 6)), keyed(honest=honest_stable), 0.01, 100)
    assert early["status"] == "insufficient" and early["unbaselined_errors"] == 6
    # Once the stable arm has answered it too, at the same rate, its failures are its own.
    later = guardrails.error_rate(
        keyed(honest=(150, 0), batches=(20, 20)), keyed(honest=honest_stable, batches=(60, 60)), 0.01, 100
    )
    assert later["status"] == "pass" and later["unexplained_errors"] == 0
    # Pooled, the same numbers fail: 20 errors in 170 canary requests against 60 in 960.
    pooled = guardrails.error_rate(keyed(all=(170, 20)), keyed(all=(960, 60)), 0.01, 100)
    assert pooled["status"] == "fail"


def test_error_rate_noise_of_a_failing_key_is_not_a_failure_but_a_bad_canary_is():
    # A key that fails half the time on both arms, a little more on the canary by chance.
    noisy = guardrails.error_rate(
        keyed(honest=(200, 0), flaky=(40, 24)), keyed(honest=(900, 0), flaky=(200, 100)), 0.01, 100
    )
    assert noisy["status"] != "fail" and noisy["unexplained_errors"] == 4
    # A canary that raises on honest texts fails, and a key doing better on the canary than on the
    # stable arm (its requests fail there only) does not offset it.
    bad = keyed(honest=(200, 10), lucky=(100, 0))
    stable = keyed(honest=(900, 0), lucky=(400, 400))
    failing = guardrails.error_rate(bad, stable, 0.01, 100)
    assert failing["status"] == "fail" and failing["unexplained_errors"] == 10


def test_latency_and_score_drift():
    fast, slow = arm([0.002] * 200), arm([0.030] * 200)
    assert guardrails.latency(slow, fast, 2.0, 100)["status"] == "fail"
    assert guardrails.latency(fast, fast, 2.0, 100)["status"] == "pass"
    low, high = arm(scores=[0.1] * 200), arm(scores=[0.9] * 200)
    drifted = guardrails.score_drift(low, high, 1.5, 100)
    assert drifted["status"] == "fail" and drifted["value"] > 1.5
    assert guardrails.score_drift(low, low, 1.5, 100)["status"] == "pass"


def test_score_psi_fails_only_beyond_its_own_noise():
    """Half the canary's scores high against 7 % of the stable's: PSI 1.03 at 100 scores each, 1.10
    at 1,000. Against a bound of 0.9, the first is within PSI's noise at 100 (margin 0.34) and holds
    the step; the second is well beyond it (margin 0.03) and fails. Under the bound always passes."""

    def scores(high_share: float, n: int) -> list[float]:
        high = round(high_share * n)
        return [0.95] * high + [0.05] * (n - high)

    few = guardrails.score_drift(arm(scores=scores(0.5, 100)), arm(scores=scores(0.07, 100)), 0.9, 100)
    assert (
        few["status"] == "insufficient" and few["value"] > 0.9 and few["noise_margin"] == pytest.approx(0.338, abs=1e-3)
    )
    many = guardrails.score_drift(arm(scores=scores(0.5, 1000)), arm(scores=scores(0.07, 1000)), 0.9, 100)
    assert many["status"] == "fail" and many["value"] > 0.9 + many["noise_margin"]
    alike = guardrails.score_drift(arm(scores=scores(0.3, 100)), arm(scores=scores(0.07, 100)), 0.9, 100)
    assert alike["status"] == "pass"


def matrix(tp: int, fp: int, fn: int, tn: int) -> np.ndarray:
    """[predicted][actual] with toxic first: tp toxic/toxic, fp toxic/clean, fn clean/toxic, tn clean/clean."""
    return np.array([[tp, fp], [fn, tn]])


def test_feedback_noise_at_small_counts_neither_promotes_nor_rolls_back():
    # The canary looks 0.1 worse on 20 labels: the interval spans both sides of the bound.
    small = guardrails.feedback(matrix(8, 2, 2, 8), matrix(9, 1, 1, 9), 20, 0.05)
    assert small["status"] == "insufficient"
    assert small["interval"][0] < -0.05 < small["interval"][1]
    # The same rates on 2,000 labels each: a clear drop, rolled back.
    large = guardrails.feedback(matrix(800, 200, 200, 800), matrix(900, 100, 100, 900), 20, 0.05)
    assert large["status"] == "fail" and large["interval"][1] < -0.05
    # As good as the stable on 2,000 labels: non-inferior, passes.
    same = guardrails.feedback(matrix(900, 100, 100, 900), matrix(900, 100, 100, 900), 20, 0.05)
    assert same["status"] == "pass" and same["interval"][0] >= -0.05
    assert guardrails.feedback(matrix(1, 0, 0, 1), matrix(900, 100, 100, 900), 20, 0.05)["status"] == "insufficient"
    assert guardrails.feedback(matrix(0, 0, 0, 0), matrix(0, 0, 0, 0), None, 0.05)["status"] == "off"


def test_shadow_agreement():
    assert guardrails.shadow(200, 190, 0.85, True, 100)["status"] == "pass"
    assert guardrails.shadow(200, 100, 0.85, True, 100)["status"] == "fail"
    assert guardrails.shadow(50, 50, 0.85, True, 100)["status"] == "insufficient"
    assert guardrails.shadow(200, 100, 0.85, False, 100)["status"] == "off"


def plan_at(step: int = 0, started: float = 0.0, **overrides) -> dict:
    body = {"canary": "v2", "steps": [10, 50, 100], "step_seconds": 60, "min_requests": 100, **overrides}
    made = plans.new_plan(body, "v1", "ops", 2, started)
    for revision in range(3, 3 + step):
        made = plans.advanced(made, revision, started)
    return made


GOOD = plans.Evidence(arm([0.002] * 150, [0.2] * 150), arm([0.002] * 900, [0.2] * 900))


def test_decisions():
    assert plans.evaluate(plan_at(), GOOD, now=10).action == "hold"  # before step_seconds
    assert plans.evaluate(plan_at(), GOOD, now=61).action == "advance"
    assert plans.evaluate(plan_at(step=2), GOOD, now=61).action == "promote"
    few = plans.Evidence(arm([0.002] * 20, [0.2] * 20), GOOD.stable)
    held = plans.evaluate(plan_at(), few, now=61)
    assert held.action == "hold" and "min_requests (20 of 100" in held.reason
    expired = plans.evaluate(plan_at(), few, now=61 + plans.MAX_HOLD_SECONDS + 1)
    assert expired.action == "rollback" and "max_hold_seconds" in expired.reason  # no evidence, no promotion
    slow = plans.Evidence(arm([0.050] * 150, [0.2] * 150), GOOD.stable)
    failed = plans.evaluate(plan_at(), slow, now=5)  # a failure does not wait for step_seconds
    assert failed.action == "rollback" and failed.reason.startswith("guardrail failed: latency")


def test_a_100_percent_step_judges_errors_on_the_step_before_and_carries_latency_and_scores():
    # The stable baseline of a 100 % step is another time: a machine busier then, or a mix of texts
    # that changed, must not roll a good canary back (it did, in a CI-like run).
    later_and_busier = plans.Evidence(arm([0.020] * 150, [0.9] * 150), arm([0.002] * 900, [0.2] * 900))
    at_full = plans.evaluate(plan_at(step=2), later_and_busier, now=61)
    assert at_full.action == "promote", at_full.reason
    carried = {r["guardrail"]: r for r in at_full.guardrails if r.get("carried")}
    assert set(carried) == {"latency", "score_psi"} and "latency carried" in at_full.reason
    at_half = plans.evaluate(plan_at(step=1), later_and_busier, now=61)  # with shared traffic: judged
    assert at_half.action == "rollback" and "latency" in at_half.reason and "score_psi" in at_half.reason
    erring = plans.Evidence(arm([0.002] * 150, [0.2] * 150, errors=30), GOOD.stable)
    assert plans.evaluate(plan_at(step=2), erring, now=61).action == "rollback"  # errors still count


def test_windows_and_validation():
    made = plan_at(step=2)
    assert plans.windows(made, 7) == {"canary": (4, 7), "stable": (3, 3), "feedback": (2, 7)}  # 100 %: step before
    assert plans.windows(plan_at(step=1), 5)["stable"] == (3, 5)
    for bad in ({"steps": [50, 10]}, {"steps": [100]}, {"steps": [10, 10]}, {"canary": "v1"}, {"guardrails": {"x": 1}}):
        with pytest.raises(plans.InvalidRolloutError):
            plans.new_plan({"canary": "v2", **bad}, "v1", "ops", 2, 0)


def call_direct(operation, function, *args, strict=False):
    return function(*args)


def test_a_batch_is_as_many_latency_samples_as_texts():
    from service.rollout.evidence import ArmEvidence, EvidenceRecorder

    flushed = []
    recorder = EvidenceRecorder(type("Backend", (), {"add": staticmethod(flushed.append)}), call_direct)
    recorder.answered(3, "canary", 0.300, [0.5] * 300)  # one batch of 300 texts in 300 ms
    recorder.answered(3, "canary", 0.002, [0.5])
    assert recorder.flush()
    canary = ArmEvidence.of(flushed[0][3], "canary")
    assert canary.answered == 2 and sum(canary.latency) == 301
    assert quantile(canary.latency, 0.95) < 0.0013  # 1 ms per text, not one 300 ms sample
    stable = arm([0.001] * 301)
    assert guardrails.latency(canary, stable, 2.0, 2)["status"] == "pass"
    # 301 texts, but 2 requests: not enough to judge against a bound of 100 requests
    assert guardrails.latency(canary, stable, 2.0, 100)["status"] == "insufficient"


def test_no_key_counts_for_more_than_its_share_of_an_arms_evidence():
    from service.rollout.evidence import key_weights

    assert key_weights({"alone": 900}, 0.5) == {"alone": 1.0}  # one key is all the traffic there is
    flood = key_weights({"flood": 900, "honest": 100}, 0.5)
    assert flood["honest"] == 1.0 and flood["flood"] * 900 == pytest.approx(100)  # weighted, half each
    three = key_weights({"a": 1000, "b": 100, "c": 100}, 0.5)
    assert three["a"] * 1000 == pytest.approx(200) and three["b"] == three["c"] == 1.0
    assert key_weights({"a": 60, "b": 40}, 0.5)["a"] * 60 == pytest.approx(40)
    assert key_weights({"a": 60, "b": 40}, None) == {"a": 1.0, "b": 1.0}


def test_a_key_whose_requests_all_fail_weighs_no_one_down():
    from service.rollout.evidence import ArmEvidence, key_weights

    # 20 failing batches beside 900 honest answers: the busy key keeps its weight, the failing
    # key is still capped against it (a flood of failures cannot dilute the error-rate tolerance).
    weights = key_weights({"honest": 900, "failing": 20}, 0.5, answered={"honest": 900, "failing": 0})
    assert weights == {"honest": 1.0, "failing": 1.0}
    flood = key_weights({"honest": 100, "failing": 900}, 0.5, answered={"honest": 100, "failing": 0})
    assert flood["honest"] == 1.0 and flood["failing"] * 900 == pytest.approx(100)
    # one answer is enough to be traffic: then the sparse key weighs the busy one down (documented)
    sparse = key_weights({"honest": 900, "probe": 20}, 0.5, answered={"honest": 900, "probe": 1})
    assert sparse["honest"] * 900 == pytest.approx(20)
    # everyone failing: measured against each other as before
    assert key_weights({"a": 60, "b": 40}, 0.5, answered={})["a"] * 60 == pytest.approx(40)

    arm = ArmEvidence.of({"honest/canary|answered": 900, "failing/canary|errors": 20}, "canary", 0.5)
    assert arm.answered == 900 and arm.errors == 20 and arm.capped_keys == 0


def test_a_flooding_key_counts_for_no_more_than_the_others_together():
    from service.rollout.evidence import ArmEvidence

    def tallies(arm, key, score_bin, n):  # n one-text requests, each a latency sample and a score
        return {f"{key}/{arm}|answered": n, f"{key}/{arm}|latency:10": n, f"{key}/{arm}|score:{score_bin}": n}

    # One client floods both arms (keyed routing splits it) with 5,000 texts on which the two
    # versions disagree; three honest clients send 300 each, scored alike by both.
    honest = {arm: {} for arm in ("canary", "stable")}
    for arm in honest:
        for key in ("a", "b", "c"):
            honest[arm] |= {f"{key}/{arm}|answered": 300, f"{key}/{arm}|latency:10": 300}
            honest[arm] |= {f"{key}/{arm}|score:{i}": 30 for i in range(10)}
    canary_side = honest["canary"] | tallies("canary", "flood", 0, 5000)
    stable_side = honest["stable"] | tallies("stable", "flood", 9, 5000)

    def psi(share):
        canary, stable = ArmEvidence.of(canary_side, "canary", share), ArmEvidence.of(stable_side, "stable", share)
        return guardrails.score_drift(canary, stable, 1.5, 100), canary

    uncapped, _ = psi(None)
    capped, canary = psi(0.5)
    assert uncapped["status"] == "fail" and uncapped["value"] > 2 * capped["value"]  # 6.8 against 2.4
    assert canary.capped_keys == 1 and canary.keys == 4
    assert canary.requests == pytest.approx(900 * 2)  # the flood weighs as much as the others together
