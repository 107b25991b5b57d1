"""The rollout: which model versions the router sends traffic to, steered while serving.

The state `{stable, canary, canary_percent, shadow, shadow_percent, revision, updated_at,
updated_by, reason}` lives in the shared store (SQLite on one host, Redis across hosts), with a
history of every change. The TOXISERVE_* variables seed it on the very first start only.

Each serving process follows it with one thread that reads the state every
`TOXISERVE_ROLLOUT_POLL_SECONDS` (`refresh`); a new revision is adopted only once every version it
names is loaded, verified and warmed, by that thread, off the request path. Routing reads one
attribute (`current`), never the store: a request is routed under exactly one revision, and a hung
store never delays one.

Writes are compare-and-set on the revision; the admin API validates a change (and loads the
versions it names, in the process that takes the call) before writing it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from service.observability import metrics
from shared_features.errors import ToxiserveError

log = logging.getLogger(__name__)

CHANGEABLE = ("stable", "canary", "canary_percent", "shadow", "shadow_percent")
HISTORY_LIMIT = 1000


class RevisionConflictError(ToxiserveError):
    """The state changed since the revision the caller read."""

    status, error_code = 409, "REVISION_CONFLICT"


class InvalidRolloutError(ToxiserveError):
    """A change naming an unusable version or value; nothing was changed."""

    status, error_code = 422, "INVALID_ROLLOUT"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def bucket(request_id: str, key: str, salt: str = "") -> int:
    """0..9999, stable in the request id: a retry with the same id lands on the same arm.

    Keyed (HMAC-SHA256 with the rollout's secret routing key): a client that chose its ids by an
    unkeyed hash chose its arm, and with it what each arm's evidence saw."""
    digest = hmac.new(key.encode("ascii"), (salt + request_id).encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def new_routing_key() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True)
class RolloutState:
    stable: str
    canary: str
    canary_percent: float
    shadow: str | None
    shadow_percent: float
    revision: int
    updated_at: str
    updated_by: str
    reason: str
    plan: dict | None = None  # the automatic rollout plan, if one was ever started (plan.py)
    # The secret that keys the arm of a request id: random, made with the seed, stored with the state
    # so every process on the store routes alike, never shown by the API. (Older stored states get
    # one at their next change.)
    routing_key: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> RolloutState:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})

    def as_dict(self) -> dict:
        """Everything, as stored."""
        return asdict(self)

    def public(self) -> dict:
        """The state as the admin API shows it (the plan has its own endpoint)."""
        shown = asdict(self)
        del shown["plan"], shown["routing_key"]
        return shown

    @property
    def named(self) -> list[str]:
        """The versions this state routes to, stable first."""
        return list(dict.fromkeys(v for v in (self.stable, self.canary, self.shadow) if v))

    def arm(self, request_id: str) -> tuple[str, str]:
        """(version, arm) for a routed request: sticky by request id within this revision."""
        if bucket(request_id, self.routing_key or "") < round(self.canary_percent * 100):
            return self.canary, "canary"
        return self.stable, "stable"

    def shadows(self, request_id: str) -> bool:
        # Its own salt: which requests are shadowed is independent of which went to the canary.
        return bool(self.shadow) and bucket(request_id, self.routing_key or "", "shadow:") < round(
            self.shadow_percent * 100
        )


def _percent(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise InvalidRolloutError(f"{name} must be a number from 0 to 100", details={name: ["0..100"]})
    return float(value)


def changed(state: RolloutState, change: dict, by: str, reason: str) -> RolloutState:
    """The state after a partial change (CHANGEABLE fields only), checked; the revision is bumped."""
    unknown = sorted(set(change) - set(CHANGEABLE))
    if unknown:
        raise InvalidRolloutError(f"unknown field(s) {unknown}", details={name: ["unknown field"] for name in unknown})
    values = {}
    for name, value in change.items():
        if name.endswith("_percent"):
            values[name] = _percent(name, value)
        elif name == "shadow" and value is None:
            values[name] = None
        elif not isinstance(value, str) or not value:
            raise InvalidRolloutError(f"{name} must be a model version", details={name: ["a version name"]})
        else:
            values[name] = value
    key = state.routing_key or new_routing_key()
    return replace(
        state,
        **values,
        revision=state.revision + 1,
        updated_at=_now(),
        updated_by=by,
        reason=reason or "",
        routing_key=key,
    )


def seed(stable: str, canary: str, canary_percent: float, routing_key: str | None = None) -> RolloutState:
    """The first state, from the settings. The routing key is stored with it, so the first seed's
    key is the deployment's: a later process's TOXISERVE_ROUTING_KEY does not re-key a stored state."""
    key = routing_key or new_routing_key()
    return RolloutState(
        stable, canary, canary_percent, None, 0.0, 1, _now(), "settings", "seeded from TOXISERVE_*", None, key
    )


def _follow(ref: weakref.ref, interval: float) -> None:
    while True:
        time.sleep(interval)
        rollout = ref()
        if rollout is None:
            return
        rollout.refresh()
        for callback in rollout.on_poll:
            try:
                callback()
            except Exception:  # one failing callback must not stop the follower
                log.exception("rollout poll callback failed")
        del rollout  # no strong reference while asleep


class Rollout:
    """One process's view of the rollout, and the writes the admin API makes."""

    def __init__(
        self,
        backend,
        call_store: Callable,
        prepare: Callable[..., None],
        initial: RolloutState,
        poll_seconds: float,
        max_versions: int,
    ) -> None:
        self.backend = backend
        self.call_store = call_store  # the store failure policy: breaker, fail open/closed, metrics
        # prepare(state, keep=()): loads and warms a state's versions, unloads the rest but `keep`; raises if it can't
        self.prepare = prepare
        # Versions the previous revision named and this one does not: a request routed under the old
        # revision a moment ago may still look its model up, so they are unloaded one poll later.
        self._lingering: tuple[str, ...] = ()
        self._lingering_since = 0.0
        self.current = initial
        self.poll_seconds = poll_seconds
        self.max_versions = max_versions
        self._lock = threading.Lock()  # one adoption at a time (the follower, an admin call)
        self._follower_pid: int | None = None
        self._failed_revision: int | None = None
        # Set while this process serves less than the stored state names (a version it cannot load
        # at start): what is missing and what it serves instead. The follower retries every poll.
        self.degraded: dict | None = None
        self.on_adopt: list[Callable[[RolloutState], None]] = []
        self.on_poll: list[Callable[[], object]] = []  # run by the follower thread after each poll

    # --- the shared state ---
    def seed_or_read(self) -> RolloutState:
        """The stored state (StoreUnavailableError if the store fails); on the very first start, the
        seed is written first."""
        stored = self.call_store("rollout_read", self.backend.read, strict=True)
        if stored is None:
            seeded = self.current
            entry = {"revision": seeded.revision, "at": seeded.updated_at, "by": seeded.updated_by}
            entry.update(change={name: getattr(seeded, name) for name in CHANGEABLE}, reason=seeded.reason)
            if self.call_store("rollout_write", self.backend.write, 0, seeded.as_dict(), entry, strict=True):
                return seeded
            stored = self.call_store("rollout_read", self.backend.read, strict=True)  # another process seeded first
        return RolloutState.from_dict(stored)

    def at_start(self) -> RolloutState:
        """The state to load at start; with the store down, the seed (followed by the real state once
        the store answers), so a store outage never keeps a process from serving."""
        try:
            return self.seed_or_read()
        except ToxiserveError as exc:
            log.warning("rollout state unreadable at start (%s); serving the seed from TOXISERVE_*", exc.message)
            return self.current

    def adopt(self, state: RolloutState, force: bool = False) -> None:
        """Switch this process to `state` once its versions are ready (raises if they can't be)."""
        with self._lock:
            if state.revision == self.current.revision and not force:
                return
            previous = self.current
            self.prepare(state, keep=previous.named)
            self.current = state
            self._lingering = tuple(v for v in previous.named if v not in state.named)
            self._lingering_since = time.monotonic()
            recovered, self.degraded = self.degraded is not None, None
        for callback in self.on_adopt:
            callback(state)
        log.info("rollout revision adopted", extra={"revision": state.revision, "versions": state.named})
        if recovered:
            log.warning("rollout revision %s is served in full again: every version it names is loaded", state.revision)

    def serve_degraded(self, stored: RolloutState, served: RolloutState, missing: dict[str, str], store: str) -> None:
        """Start-up with a stored state naming versions this host cannot load (`missing`: version ->
        why): route under `served`, the most of it that loads here, and say so once, clearly."""
        with self._lock:
            self.prepare(served)
            self.current = served
            self.degraded = {"revision": stored.revision, "missing": missing, "stored": stored.public()}
            self._failed_revision = stored.revision  # the follower's retries are counted, not logged again
        for callback in self.on_adopt:
            callback(served)
        roles = {
            version: role
            for role, version in (("shadow", stored.shadow), ("canary", stored.canary), ("stable", stored.stable))
        }
        named = ", ".join(f"{version} ({roles.get(version, 'named')}: {why})" for version, why in missing.items())
        log.error(
            "rollout revision %s in store %s, set by %s at %s (%s), names versions this host cannot load: %s. Serving "
            "stable %s with %s %% to canary %s until they load (retried every poll). Fix: put them under "
            "TOXISERVE_MODEL_DIR, change the rollout, or re-seed it from the settings with `toxiserve "
            "rollout reset --reason ...`",
            stored.revision,
            store,
            stored.updated_by,
            stored.updated_at,
            stored.reason or "no reason given",
            named,
            served.stable,
            served.canary_percent,
            served.canary,
        )

    def refresh(self, catch_up: int = 3) -> None:
        """The follower thread, every poll interval: read the stored state and adopt a new revision,
        loading and warming any version it names here first (this thread is off the request path;
        requests go on under the current revision meanwhile). Loading can take seconds (a pickle's
        imports): if the state moved on meanwhile, the newest is adopted at once, not a poll later."""
        self._unload_lingering()
        for _ in range(catch_up):
            try:
                stored = self.call_store("rollout_read", self.backend.read)
            except ToxiserveError as exc:  # the store is down (failing closed): route under what we have
                log.warning("rollout state unreadable; routing under revision %s (%s)", self.current.revision, exc)
                return
            if not stored or (stored["revision"] == self.current.revision and self.degraded is None):
                return
            try:
                self.adopt(RolloutState.from_dict(stored), force=self.degraded is not None)
            except Exception as exc:  # a version that won't load here: keep serving, retry at the next poll
                metrics.ROLLOUT_ADOPT_FAILURES.inc()
                if self._failed_revision != stored["revision"]:  # once per revision: retries are counted, not logged
                    self._failed_revision = stored["revision"]
                    log.error("cannot adopt rollout revision %s: %s; retrying every poll", stored["revision"], exc)
                return

    def _unload_lingering(self) -> None:
        """A poll interval after an adoption, the versions only the previous revision named: no
        request routed under it can still be on its way to their models by now."""
        if self._lingering and time.monotonic() - self._lingering_since >= self.poll_seconds:
            with self._lock:
                self._lingering = ()
                self.prepare(self.current)

    def ensure_following(self) -> None:
        """Start this process's follower thread once (threads don't survive a fork). Called after
        fork and on routing; never in the gunicorn master, where a thread could hold a lock at fork.
        It ends when this Rollout is garbage (apps in tests)."""
        if self._follower_pid == os.getpid():
            return
        self._follower_pid = os.getpid()
        threading.Thread(
            target=_follow, args=(weakref.ref(self), self.poll_seconds), name="toxiserve-rollout", daemon=True
        ).start()

    # --- the admin API's and the controller's writes ---
    def update(
        self,
        change: dict,
        expected_revision: int | None,
        by: str,
        reason: str,
        plan: Callable[[RolloutState, RolloutState], dict | None] | None = None,
        decision: dict | None = None,
    ) -> RolloutState:
        """Write `change` (compare-and-set). `plan(current, proposed)` gives the plan stored with it
        (None: kept as it is); `decision` goes into the history entry beside the change."""
        current = self.seed_or_read()
        if expected_revision is not None and expected_revision != current.revision:
            raise RevisionConflictError(
                f"the rollout is at revision {current.revision}, not {expected_revision}; read it and try again",
                details={"revision": current.revision},
            )
        proposed = changed(current, change, by, reason)
        if plan is not None:
            proposed = replace(proposed, plan=plan(current, proposed))
        if len(proposed.named) > self.max_versions:
            raise InvalidRolloutError(
                f"the rollout would name {len(proposed.named)} versions; TOXISERVE_MAX_LOADED_VERSIONS is "
                f"{self.max_versions}"
            )
        try:
            # loads and verifies every named version here first (refusal changes nothing); what the
            # current revision routes to stays loaded until the new one is adopted, and a poll after
            self.prepare(proposed, keep=self.current.named)
        except ToxiserveError as exc:
            raise InvalidRolloutError(
                f"cannot serve the rollout: {exc.message}", details={"versions": proposed.named}
            ) from None
        entry = {"revision": proposed.revision, "at": proposed.updated_at, "by": by, "change": change, "reason": reason}
        entry.update(decision or {})
        # strict: with the store down a change is a 503 even when the policy fails open; it never passes unrecorded
        if not self.call_store(
            "rollout_write", self.backend.write, current.revision, proposed.as_dict(), entry, strict=True
        ):
            self.prepare(self.current, keep=self._lingering)  # put this process's loaded versions back
            raise RevisionConflictError(
                "the rollout changed while this change was being checked; read it and try again"
            )
        self.adopt(proposed)
        return proposed

    def record_hold(self, entry: dict) -> None:
        """A controller's hold: it changes nothing, so a step's holds fold into one entry."""
        self.call_store("rollout_write", self.backend.record_hold, entry, strict=True)

    def history(self, limit: int = HISTORY_LIMIT, before: int | None = None) -> list[dict]:
        return self.call_store("rollout_history", self.backend.history, limit, before, strict=True)
