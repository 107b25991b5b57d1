"""Guardrails: the canary against the stable arm over a step's window, each with its numbers.

Each guardrail answers `pass`, `fail`, `insufficient` (not enough evidence yet: it holds the step,
never passes it) or `off`. Every bound has a default (DEFAULTS); null in a plan turns one off.

- error rate: canary 5xx rate <= what each API key's stable rate predicts for its canary requests
  + max_error_rate_delta, once the canary has min_requests answers. It fails early once the errors
  those rates do not explain exceed, beyond their noise, what min_requests answers could absorb;
  errors from a key with no stable answers yet hold the step.
- latency: canary p95 <= stable p95 x max_latency_ratio (request start to answer per text, in the
  data plane, every transport), both arms with min_requests answers and texts. It fails only when significantly
  more than 5 % of the canary's answers are slower than that bound (Wilson 95 % lower bound above
  5 %); a p95 over the bound without that holds the step (a few slow answers at small counts).
- score drift: PSI of the canary's score histogram against the stable's (10 equal-width bins,
  +0.5 per bin: shared_features.drift.psi, the one formula) <= max_score_psi, both with min_requests
  scores. It fails only above the bound by more than PSI's own noise at those counts (the 95th
  percentile of chi2(9) x (1/n1 + 1/n2)); between the two it holds the step.
- feedback (off until min_feedback is set): with min_feedback labels on both versions since the
  plan began, a non-inferiority test on macro-F1. The 95 % percentile-bootstrap interval of
  (canary - stable) macro-F1 (2,000 multinomial resamples of each confusion matrix, seed 0): its
  lower end >= -max_f1_drop passes, its upper end < -max_f1_drop fails, anything between is
  inconclusive and holds. So noise at small counts neither promotes nor rolls back.
- shadow (when the rollout shadows): agreement >= min_shadow_agreement over min_requests compared texts.
"""

from __future__ import annotations

import math

import numpy as np

from service.rollout.evidence import ArmEvidence, count_above, quantile
from service.rollout.quality import BOOTSTRAP_RESAMPLES, LABELS, _f1s, wilson
from shared_features.drift import psi

PASS, FAIL, INSUFFICIENT, OFF = "pass", "fail", "insufficient", "off"

# Measured on the dataset (docs/rollouts.md, Automatic rollouts): v2 against v1 has a score PSI of 0.54
# (0.98 at the 95th percentile with 100 canary scores) and agrees on 93 % of labels; a model
# trained on inverted labels has a PSI above 4. The bounds let a recalibrated model through and
# stop one that scores another population.
DEFAULTS = {
    "max_error_rate_delta": 0.01,
    "max_latency_ratio": 2.0,
    "max_score_psi": 1.5,
    "min_feedback": None,
    "max_f1_drop": 0.05,
    "min_shadow_agreement": 0.85,
    # No API key's requests count for more than half of an arm's evidence (evidence.key_weights).
    "max_key_share": 0.5,
}
Z_95 = 1.96
CHI2_95_SCORE_BINS = 16.919  # the 95th percentile of chi-square with 9 degrees of freedom (10 score bins)
LATENCY_QUANTILE = 0.95


def _report(name: str, status: str, value=None, bound=None, **numbers) -> dict:
    rounded = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in numbers.items()}
    return {
        "guardrail": name,
        "status": status,
        "value": round(value, 6) if isinstance(value, float) else value,
        "bound": bound,
        **rounded,
    }


def error_rate(canary: ArmEvidence, stable: ArmEvidence, delta: float | None, min_requests: int) -> dict:
    if delta is None:
        return _report("error_rate", OFF)
    numbers = {
        "canary_errors": canary.errors,
        "canary_requests": canary.requests,
        "stable_errors": stable.errors,
        "stable_requests": stable.requests,
    }
    if stable.requests < min_requests:
        return _report("error_rate", INSUFFICIENT, None, None, **numbers)
    stable_rate = stable.errors / stable.requests
    expected = unexplained = excess_noise = unbaselined = 0.0
    # The canary's errors against what each key's own stable rate predicts, not one pooled rate: a
    # client whose requests fail on both arms (batches past their deadline) then explains its own
    # canary errors, and its failures landing on the canary first by chance roll nothing back.
    baselines = stable.by_key()
    for key, (requests, errors) in canary.by_key().items():
        base_requests, base_errors = baselines.get(key, (0.0, 0.0))
        if base_requests:
            rate = base_errors / base_requests
            expected += requests * rate
            # a key's errors below its prediction offset no one else's: its own noise, or its own
            # requests that fail on the stable arm only, must not hide another key's failures
            unexplained += max(0.0, errors - requests * rate)
            # binomial noise of the canary's errors and of the key's stable rate
            excess_noise += requests * rate * (1 - rate) * (1 + requests / base_requests)
        else:  # a key the stable arm has not answered yet: its errors can hold the step, not fail it
            expected += requests * stable_rate
            unbaselined += errors
    numbers |= {"stable_rate": stable_rate, "unexplained_errors": unexplained, "unbaselined_errors": unbaselined}
    value = canary.errors / canary.requests if canary.requests else None
    bound = round((expected / canary.requests if canary.requests else stable_rate) + delta, 6)
    # Fails early, once the errors that keys' stable rates do not explain exceed, beyond their
    # noise (95 %), what min_requests answers could absorb.
    if unexplained - Z_95 * math.sqrt(excess_noise) > delta * max(canary.requests, min_requests):
        return _report("error_rate", FAIL, value, bound, **numbers)
    passed = canary.requests >= min_requests and unexplained + unbaselined <= delta * canary.requests
    return _report("error_rate", PASS if passed else INSUFFICIENT, value, bound, **numbers)


def latency(canary: ArmEvidence, stable: ArmEvidence, ratio: float | None, min_requests: int) -> dict:
    if ratio is None:
        return _report("latency", OFF)
    canary_p95, stable_p95 = quantile(canary.latency, LATENCY_QUANTILE), quantile(stable.latency, LATENCY_QUANTILE)
    numbers = {
        "canary_p95_ms": None if canary_p95 is None else canary_p95 * 1000,
        "stable_p95_ms": None if stable_p95 is None else stable_p95 * 1000,
        "canary_answers": canary.answered,
        "stable_answers": stable.answered,
        "canary_texts": sum(canary.latency),
        "stable_texts": sum(stable.latency),
    }
    # Enough requests as well as texts: one batch brings hundreds of texts, yet the comparison then
    # rests on the few single requests beside it (a good canary was rolled back on ten of them).
    answers = min(canary.answered, stable.answered)
    if answers < min_requests or min(numbers["canary_texts"], numbers["stable_texts"]) < min_requests:
        return _report("latency", INSUFFICIENT, None, ratio, **numbers)
    value = canary_p95 / stable_p95
    # The canary's p95 is past the bound when more than 5 % of its answers are slower than
    # stable p95 x ratio: fail only when that share is significantly above 5 % (Wilson lower
    # bound), so a few slow answers at small counts hold the step rather than roll it back.
    slower = count_above(canary.latency, stable_p95 * ratio)
    interval = wilson(round(slower), numbers["canary_texts"])
    numbers |= {"canary_share_slower": slower / numbers["canary_texts"], "share_interval": interval}
    if interval[0] > 1 - LATENCY_QUANTILE:
        status = FAIL
    else:
        status = PASS if value <= ratio else INSUFFICIENT
    return _report("latency", status, value, ratio, **numbers)


def carried(name: str, bound: float | None) -> dict:
    """A guardrail at a 100 % step, where the stable arm has no traffic to compare with: it passed
    on shared traffic at every step before (a plan only advances when all pass)."""
    if bound is None:
        return _report(name, OFF)
    return _report(name, PASS, None, bound, carried="passed at the steps before, on traffic both arms shared")


def score_drift(canary: ArmEvidence, stable: ArmEvidence, bound: float | None, min_requests: int) -> dict:
    if bound is None:
        return _report("score_psi", OFF)
    numbers = {"canary_scores": sum(canary.scores), "stable_scores": sum(stable.scores)}
    if numbers["canary_scores"] < min_requests or numbers["stable_scores"] < min_requests:
        return _report("score_psi", INSUFFICIENT, None, bound, **numbers)
    value = psi(canary.scores, stable.scores)
    # PSI over small histograms is noisy and biased upward: with no difference at all, n1 and n2
    # scores give about chi2(bins - 1) x (1/n1 + 1/n2). It fails only beyond the bound by that
    # much (the 95th percentile); between the two it holds the step for more scores.
    margin = CHI2_95_SCORE_BINS * (1 / numbers["canary_scores"] + 1 / numbers["stable_scores"])
    numbers["noise_margin"] = margin
    status = PASS if value <= bound else FAIL if value > bound + margin else INSUFFICIENT
    return _report("score_psi", status, value, bound, **numbers)


def _macro_f1(cells: np.ndarray) -> np.ndarray:
    return _f1s(cells).mean(axis=-1)


def macro_f1_difference(canary: np.ndarray, stable: np.ndarray, seed: int = 0) -> tuple[float, list[float] | None]:
    """(canary - stable) macro-F1 and its 95 % percentile-bootstrap interval; matrices [predicted, actual]."""
    point = float(_macro_f1(canary.astype(float)) - _macro_f1(stable.astype(float)))
    rng = np.random.default_rng(seed)
    draws = []
    for cells in (canary, stable):
        n = int(cells.sum())
        drawn = rng.multinomial(n, (cells / n).ravel(), size=BOOTSTRAP_RESAMPLES).reshape(-1, 2, 2).astype(float)
        draws.append(_macro_f1(drawn))
    differences = draws[0] - draws[1]
    differences = differences[~np.isnan(differences)]  # a resample that left a class's F1 undefined
    if math.isnan(point) or len(differences) < BOOTSTRAP_RESAMPLES // 2:
        return point, None
    return point, [float(q) for q in np.percentile(differences, [2.5, 97.5])]


def confusion(matrix: dict[str, dict[str, int]]) -> np.ndarray:
    return np.array([[matrix[p][a] for a in LABELS] for p in LABELS], dtype=np.int64)


def feedback(canary: np.ndarray, stable: np.ndarray, min_feedback: int | None, max_drop: float) -> dict:
    if min_feedback is None:
        return _report("feedback_f1", OFF)
    numbers = {"canary_labels": int(canary.sum()), "stable_labels": int(stable.sum())}
    if numbers["canary_labels"] < min_feedback or numbers["stable_labels"] < min_feedback:
        return _report("feedback_f1", INSUFFICIENT, None, -max_drop, **numbers)
    point, interval = macro_f1_difference(canary, stable)
    numbers |= {
        "canary_macro_f1": float(_macro_f1(canary.astype(float))),
        "stable_macro_f1": float(_macro_f1(stable.astype(float))),
        "interval": None if interval is None else [round(v, 6) for v in interval],
    }
    if interval is None:
        status = INSUFFICIENT  # a class never seen by one version: its F1 is undefined
    elif interval[1] < -max_drop:
        status = FAIL
    elif interval[0] >= -max_drop:
        status = PASS
    else:
        status = INSUFFICIENT  # inconclusive: more labels decide
    return _report("feedback_f1", status, None if math.isnan(point) else point, -max_drop, **numbers)


def shadow(compared: int, agreed: int, bound: float | None, shadowing: bool, min_requests: int) -> dict:
    if bound is None or not shadowing:
        return _report("shadow_agreement", OFF)
    numbers = {"compared": compared, "agreed": agreed}
    if compared < min_requests:
        return _report("shadow_agreement", INSUFFICIENT, None, bound, **numbers)
    value = agreed / compared
    return _report("shadow_agreement", PASS if value >= bound else FAIL, value, bound, **numbers)
