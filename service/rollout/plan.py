"""A rollout plan: a canary taken through traffic steps on evidence, promoted or rolled back.

The plan lives inside the stored rollout state, so every change it makes (start, advance, promote,
roll back) is one compare-and-set write of the state, the plan and the history entry together:
a controller that dies mid-write leaves either the old step or the new one, never half of each.

`evaluate` is a pure function of the plan, the evidence and the clock; the controller
(`controller.py`) gathers the evidence and applies the decision. Each evaluation is one of:

- rollback: a guardrail failed (all failed ones are named, with their numbers), or the step held
  longer than max_hold_seconds past step_seconds: no evidence, no promotion;
- advance (promote after the last step): step_seconds passed, the canary answered min_requests,
  and every configured guardrail passes;
- hold: otherwise, saying what it waits for.

A step's window is the revisions since it began; at a 100 % step the stable arm gets no traffic,
so its baseline is the stable arm of the step before. Only the error rate is judged on that
baseline: latency and score distributions depend on the machine's load and the traffic's mix at
the time, so comparing them across steps rolled back good canaries. They were compared on shared
traffic at every step before, and a 100 % step carries those verdicts. Feedback counts since the
plan began: a version's quality does not depend on its share, and labels arrive late.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from service.rollout import guardrails
from service.rollout.evidence import ArmEvidence
from service.rollout.state import InvalidRolloutError
from shared_features.errors import ToxiserveError

RUNNING, PROMOTED, ROLLED_BACK, ABORTED = "running", "promoted", "rolled_back", "aborted"
ADVANCE, HOLD, ROLLBACK, PROMOTE = "advance", "hold", "rollback", "promote"
DEFAULTS = {"steps": [10, 25, 50, 100], "step_seconds": 60, "min_requests": 100, "interval_seconds": 10}
MAX_HOLD_SECONDS = 600  # a step held this long past step_seconds rolls back


class PlanRunningError(ToxiserveError):
    """A plan is already running: abort it (DELETE /admin/rollout/plan) before starting another."""

    status, error_code = 409, "PLAN_RUNNING"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def running(plan: dict | None) -> bool:
    return bool(plan) and plan["status"] == RUNNING


def new_plan(body: dict, stable: str, by: str, revision: int, now: float) -> dict:
    """The plan a validated request body starts, its first step beginning at `revision`."""
    steps = [float(step) for step in body.get("steps", DEFAULTS["steps"])]
    if any(not 0 < step <= 100 for step in steps) or steps != sorted(set(steps)):
        raise InvalidRolloutError("steps must be increasing percentages in (0, 100]", details={"steps": steps})
    if steps[0] >= 100:
        raise InvalidRolloutError(
            "the first step must be below 100 %: guardrails compare the canary with the stable arm's traffic",
            details={"steps": steps},
        )
    if body["canary"] == stable:
        raise InvalidRolloutError(f"the canary {body['canary']!r} is the stable version", details={"canary": [stable]})
    unknown = sorted(set(body.get("guardrails", {})) - set(guardrails.DEFAULTS))
    if unknown:
        raise InvalidRolloutError(f"unknown guardrail(s) {unknown}", details={"guardrails": unknown})
    settings = {name: body.get(name, default) for name, default in DEFAULTS.items() if name != "steps"}
    return {
        "id": uuid.uuid4().hex[:12],
        "status": RUNNING,
        "canary": body["canary"],
        "stable": stable,
        "steps": steps,
        **settings,
        "max_hold_seconds": body.get("max_hold_seconds", MAX_HOLD_SECONDS),
        "guardrails": {**guardrails.DEFAULTS, **body.get("guardrails", {})},
        "step": 0,
        "step_started": now,
        "step_revisions": [revision],
        "started_at": _now_iso(),
        "started_by": by,
        "finished_at": None,
        "outcome": None,
    }


STEERED = {"stable", "canary", "canary_percent"}  # what a plan steers: changing one by hand ends it


def after_manual_change(change: dict, by: str):
    """The plan to store with a change made by hand: a running plan whose arms or share it touches
    is aborted (the operator took over), naming who and at which revision."""

    def plan_after(current, proposed) -> dict | None:
        if running(current.plan) and STEERED & set(change):
            reason = f"the rollout was changed by hand ({by}) at revision {proposed.revision}"
            return finished(current.plan, ABORTED, reason)
        return current.plan

    return plan_after


def advanced(plan: dict, revision: int, now: float) -> dict:
    return {
        **plan,
        "step": plan["step"] + 1,
        "step_started": now,
        "step_revisions": [*plan["step_revisions"], revision],
    }


def finished(plan: dict, status: str, reason: str, report: list[dict] | None = None) -> dict:
    return {**plan, "status": status, "finished_at": _now_iso(), "outcome": {"reason": reason, "guardrails": report}}


def windows(plan: dict, revision: int) -> dict[str, tuple[int, int]]:
    """The revisions each arm's evidence is read from: the step so far; the stable arm of a 100 % step
    from the step before (the canary takes all traffic then)."""
    step, revisions = plan["step"], plan["step_revisions"]
    canary = (revisions[step], revision)
    stable = canary if plan["steps"][step] < 100 else (revisions[step - 1], revisions[step] - 1)
    return {"canary": canary, "stable": stable, "feedback": (revisions[0], revision)}


@dataclass
class Evidence:
    canary: ArmEvidence
    stable: ArmEvidence
    shadow_compared: int = 0
    shadow_agreed: int = 0
    shadowing: bool = False
    canary_labels: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), dtype=np.int64))
    stable_labels: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), dtype=np.int64))


@dataclass
class Decision:
    action: str
    reason: str
    guardrails: list[dict]
    step: int
    percent: float
    elapsed_seconds: float
    canary_requests: int

    def as_dict(self) -> dict:
        return {
            "decision": self.action,
            "reason": self.reason,
            "step": self.step,
            "percent": self.percent,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "canary_requests": self.canary_requests,
            "guardrails": self.guardrails,
        }


def reports(plan: dict, evidence: Evidence) -> list[dict]:
    bounds, min_requests = plan["guardrails"], plan["min_requests"]
    canary, stable = evidence.canary, evidence.stable
    if plan["steps"][plan["step"]] >= 100:  # no shared traffic: the steps before compared the arms
        latency = guardrails.carried("latency", bounds["max_latency_ratio"])
        score_psi = guardrails.carried("score_psi", bounds["max_score_psi"])
    else:
        latency = guardrails.latency(canary, stable, bounds["max_latency_ratio"], min_requests)
        score_psi = guardrails.score_drift(canary, stable, bounds["max_score_psi"], min_requests)
    return [
        guardrails.error_rate(canary, stable, bounds["max_error_rate_delta"], min_requests),
        latency,
        score_psi,
        guardrails.feedback(
            evidence.canary_labels, evidence.stable_labels, bounds["min_feedback"], bounds["max_f1_drop"]
        ),
        guardrails.shadow(
            evidence.shadow_compared,
            evidence.shadow_agreed,
            bounds["min_shadow_agreement"],
            evidence.shadowing,
            min_requests,
        ),
    ]


def _failure(report: dict) -> str:
    relation = ">=" if report["guardrail"] in ("shadow_agreement", "feedback_f1") else "<="
    value = "n/a" if report["value"] is None else f"{report['value']:.4g}"
    detail = f" (95 % interval {report['interval']})" if report.get("interval") else ""
    return f"{report['guardrail']} {value}{detail}, bound {relation} {report['bound']:.4g}"


def evaluate(plan: dict, evidence: Evidence, now: float | None = None) -> Decision:
    now = time.time() if now is None else now
    step = plan["step"]
    checked = reports(plan, evidence)
    elapsed = now - plan["step_started"]

    def decide(action: str, reason: str) -> Decision:
        percent = plan["steps"][step]
        return Decision(action, reason, checked, step, percent, elapsed, round(evidence.canary.requests))

    failed = [r for r in checked if r["status"] == guardrails.FAIL]
    if failed:
        return decide(ROLLBACK, "guardrail failed: " + "; ".join(map(_failure, failed)))
    waiting = []
    if elapsed < plan["step_seconds"]:
        waiting.append(f"step_seconds ({elapsed:.1f} of {plan['step_seconds']:g} s)")
    if evidence.canary.requests < plan["min_requests"]:
        waiting.append(f"min_requests ({evidence.canary.requests:.0f} of {plan['min_requests']} canary requests)")
    short = [r["guardrail"] for r in checked if r["status"] == guardrails.INSUFFICIENT]
    if short:
        waiting.append("evidence for " + ", ".join(short))
    if not waiting:
        passed = ", ".join(
            f"{r['guardrail']} " + ("carried" if r["value"] is None else f"{r['value']:.4g}")
            for r in checked
            if r["status"] == guardrails.PASS
        )
        numbers = f" ({passed}; {evidence.canary.requests:.0f} canary requests)"
        if step == len(plan["steps"]) - 1:
            return decide(PROMOTE, f"every guardrail passed at each of {len(plan['steps'])} steps" + numbers)
        return decide(ADVANCE, f"every guardrail passed at {plan['steps'][step]:g} %" + numbers)
    held = elapsed - plan["step_seconds"]
    if held > plan["max_hold_seconds"]:
        return decide(
            ROLLBACK,
            f"held {held:.0f} s past step_seconds (max_hold_seconds {plan['max_hold_seconds']:g}) waiting for "
            + ", ".join(waiting),
        )
    return decide(HOLD, "waiting for " + ", ".join(waiting))
