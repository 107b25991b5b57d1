"""The rollout controller: one process across every worker and host evaluates a running plan.

Every serving process runs a controller thread. While the followed rollout state has a running
plan, each thread tries to take (or extend) one lease in the shared store, every quarter of the
plan's interval; the holder evaluates the plan every `interval_seconds` and applies the decision.
The lease lasts 1.5 intervals, so when its holder dies (SIGKILL, OOM, a host lost) another process
takes over within 1.75 intervals. A process that stops gracefully gives it up at once.

A stale holder cannot decide twice: every change is a compare-and-set on the revision it
evaluated. Evidence comes from the store (every host's tallies, `evidence.py`) and from feedback
counts, never from this process alone. Every decision goes into the rollout history with its
evidence, and into the log.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime

from service.errors import NotFoundError
from service.observability import metrics
from service.rollout import guardrails
from service.rollout import plan as plans
from service.rollout.evidence import ArmEvidence, EvidenceRecorder
from service.rollout.state import RevisionConflictError, Rollout, RolloutState
from service.store.base import AUTOMATIC_BY
from shared_features.errors import ToxiserveError

log = logging.getLogger(__name__)

LEASE = "rollout-controller"
LEASE_INTERVALS = 1.5  # the lease outlives its holder by this many intervals
TICKS_PER_INTERVAL = 4  # how often, per interval, every process tries the lease


def _control(ref: weakref.ref) -> None:
    while True:
        controller = ref()
        if controller is None:
            return
        try:
            controller.tick()
        except Exception:  # the controller must never die of one bad evaluation
            log.exception("rollout controller tick failed")
        period = controller.tick_period()
        del controller  # no strong reference while asleep
        time.sleep(period)


class RolloutController:
    def __init__(
        self,
        rollout: Rollout,
        evidence: EvidenceRecorder,
        leases,
        feedback_matrix: Callable[[str, int, int], dict],
        call_store: Callable,
        poll_seconds: float,
    ) -> None:
        self.rollout, self.evidence, self.leases = rollout, evidence, leases
        self.feedback_matrix = feedback_matrix  # (version, first, last revision) -> matrix[predicted][actual]
        self.call_store = call_store
        self.poll_seconds = poll_seconds
        self._pid: int | None = None
        self._token = uuid.uuid4().hex[:6]  # two controllers in one process (apps in tests) are two owners
        self._holding = False
        self._last_evaluation = float("-inf")

    @property
    def owner(self) -> str:
        """This process, as the lease and the history name it: host:pid:token."""
        return f"{socket.gethostname()}:{os.getpid()}:{self._token}"

    def ensure_running(self) -> None:
        """Start this process's controller thread once (threads don't survive a fork)."""
        if self._pid == os.getpid():
            return
        self._pid, self._holding = os.getpid(), False
        threading.Thread(target=_control, args=(weakref.ref(self),), name="toxiserve-controller", daemon=True).start()

    def tick_period(self) -> float:
        plan = self.rollout.current.plan
        if plans.running(plan):
            return min(self.poll_seconds, plan["interval_seconds"] / TICKS_PER_INTERVAL)
        return self.poll_seconds

    def tick(self) -> None:
        """Hold the lease while a plan runs (the followed state says so: no store read otherwise);
        the holder evaluates once per interval."""
        plan = self.rollout.current.plan
        if not plans.running(plan):
            self.release()
            return
        interval = plan["interval_seconds"]
        try:
            held = self.call_store(
                "lease", self.leases.acquire, LEASE, self.owner, interval * LEASE_INTERVALS, strict=True
            )
        except ToxiserveError:
            return  # the store is down: nobody can decide, and nobody should
        if held and not self._holding:
            log.info("rollout controller lease taken", extra={"owner": self.owner, "plan": plan["id"]})
        self._holding = held
        if held and time.monotonic() - self._last_evaluation >= interval:
            self._last_evaluation = time.monotonic()
            self.evaluate_and_apply()

    def release(self) -> None:
        if self._holding and self._pid == os.getpid():
            self._holding = False
            try:
                self.call_store("lease", self.leases.release, LEASE, self.owner, strict=True)
            except ToxiserveError:
                pass  # it expires on its own

    # --- evidence and decisions ---
    def gather(self, state: RolloutState, plan: dict) -> plans.Evidence:
        windows = plans.windows(plan, state.revision)
        canary_tallies = self.evidence.window(*windows["canary"])
        stable_tallies = (
            canary_tallies if windows["stable"] == windows["canary"] else self.evidence.window(*windows["stable"])
        )
        first, last = windows["feedback"]
        share = plan["guardrails"].get("max_key_share", guardrails.DEFAULTS["max_key_share"])
        return plans.Evidence(
            canary=ArmEvidence.of(canary_tallies, "canary", share),
            stable=ArmEvidence.of(stable_tallies, "stable", share),
            shadow_compared=canary_tallies.get("shadow|compared", 0),
            shadow_agreed=canary_tallies.get("shadow|agreed", 0),
            shadowing=bool(state.shadow) and state.shadow_percent > 0,
            canary_labels=guardrails.confusion(self.feedback_matrix(plan["canary"], first, last)),
            stable_labels=guardrails.confusion(self.feedback_matrix(plan["stable"], first, last)),
        )

    def evaluate_and_apply(self) -> plans.Decision | None:
        self.evidence.flush()  # this process's own tallies count too
        try:
            state = self.rollout.seed_or_read()
            plan = state.plan
            if not plans.running(plan):
                return None
            decision = plans.evaluate(plan, self.gather(state, plan))
            self.apply(state, plan, decision)
        except RevisionConflictError:
            log.info("rollout changed while the controller evaluated it; evaluating again next interval")
            return None
        except ToxiserveError as exc:
            log.warning("rollout controller could not evaluate the plan: %s", exc.message)
            return None
        return decision

    def apply(self, state: RolloutState, plan: dict, decision: plans.Decision) -> None:
        evidence = decision.as_dict()
        extra = {"decision": decision.action, "plan": plan["id"], "evidence": evidence, "controller": self.owner}
        if decision.action == plans.HOLD:
            at = datetime.now(UTC).isoformat(timespec="milliseconds")
            entry = {"revision": state.revision, "at": at, "by": AUTOMATIC_BY, "change": {}}
            self.rollout.record_hold({**entry, "reason": decision.reason, **extra})
        else:
            self._write(state, plan, decision, extra)
        # Counted and logged once written: a decision that lost a compare-and-set was never made.
        metrics.child(metrics.ROLLOUT_PLAN_DECISIONS, decision.action).inc()
        level = logging.WARNING if decision.action == plans.ROLLBACK else logging.INFO
        log.log(
            level,
            "rollout plan %s: %s",
            decision.action,
            decision.reason,
            extra={"plan": plan["id"], "decision": decision.action, "revision": state.revision, "step": decision.step},
        )

    def _write(self, state: RolloutState, plan: dict, decision: plans.Decision, extra: dict) -> None:
        """The rollout change a decision makes, with the plan's next state, in one compare-and-set write."""
        if decision.action == plans.ADVANCE:
            change = {"canary_percent": plan["steps"][plan["step"] + 1]}

            def next_plan(current, proposed):
                return plans.advanced(current.plan, proposed.revision, time.time())

        else:
            status = plans.PROMOTED if decision.action == plans.PROMOTE else plans.ROLLED_BACK
            change = {"canary_percent": 0.0}
            if decision.action == plans.PROMOTE:
                change = {"stable": plan["canary"], "canary": state.stable, "canary_percent": 0.0}

            def next_plan(current, proposed):
                return plans.finished(current.plan, status, decision.reason, decision.guardrails)

        self.rollout.update(change, state.revision, AUTOMATIC_BY, decision.reason, plan=next_plan, decision=extra)

    # --- the admin API's plan writes ---
    def start(self, body: dict, by: str) -> dict:
        """Start a plan: the canary named at the first step's share, in one write with the plan."""
        started: dict = {}
        decision = {"decision": "start"}  # its plan id is known once the plan is made, before the write

        def with_plan(current, proposed):
            if plans.running(current.plan):
                raise plans.PlanRunningError(
                    f"plan {current.plan['id']} is running: abort it (DELETE /admin/rollout/plan) first"
                )
            started.update(plans.new_plan(body, current.stable, by, proposed.revision, time.time()))
            decision["plan"] = started["id"]
            return started

        steps = body.get("steps", plans.DEFAULTS["steps"])
        change = {"canary": body["canary"], "canary_percent": float(steps[0])}
        reason = body.get("reason") or f"plan: {body['canary']} through {', '.join(f'{s:g}' for s in steps)} %"
        self.rollout.update(change, body.get("expected_revision"), by, reason, plan=with_plan, decision=decision)
        log.info("rollout plan started", extra={"plan": started["id"], "canary": started["canary"], "by": by})
        return self.describe()

    def abort(self, by: str, reason: str) -> dict:
        """Abort the running plan and roll back (canary share 0 %)."""
        reason = reason or f"plan aborted by {by}"

        decision = {"decision": "abort"}

        def aborted(current, proposed):
            if not plans.running(current.plan):
                raise NotFoundError("no rollout plan is running")
            decision["plan"] = current.plan["id"]
            return plans.finished(current.plan, plans.ABORTED, reason)

        # The check is in the write's own read: no plan running, nothing is written (404).
        self.rollout.update({"canary_percent": 0.0}, None, by, reason, plan=aborted, decision=decision)
        log.warning("rollout plan aborted", extra={"by": by})
        return self.describe()

    def describe(self) -> dict:
        """GET /admin/rollout/plan: the plan, its step, and each guardrail's value against its bound now."""
        state = self.rollout.seed_or_read()
        plan = state.plan
        if not plan:
            raise NotFoundError("no rollout plan was ever started: PUT /admin/rollout/plan starts one")
        shown = {key: value for key, value in plan.items() if key != "step_started"}
        shown["current_step"] = {
            "index": plan["step"],
            "percent": plan["steps"][plan["step"]],
            "revision": plan["step_revisions"][plan["step"]],
        }
        if plans.running(plan):
            preview = plans.evaluate(plan, self.gather(state, plan))
            shown["current_step"]["elapsed_seconds"] = round(preview.elapsed_seconds, 3)
            shown["current_step"]["canary_requests"] = preview.canary_requests
            shown["evaluation"] = preview.guardrails
            shown["next_decision"] = {"decision": preview.action, "reason": preview.reason}
            holder = self.call_store("lease", self.leases.holder, LEASE, strict=True)
            shown["controller"] = {"owner": holder[0], "lease_seconds_left": round(holder[1], 3)} if holder else None
        else:
            shown["evaluation"] = (plan["outcome"] or {}).get("guardrails")
        return shown
