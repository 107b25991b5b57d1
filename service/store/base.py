"""The store interface and the factory that picks a backend from its URL."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from limits.storage import Storage

from shared_features.errors import ToxiserveError

# Idempotency records live under "<namespace>:idem2:<key id>:<request id>". The 2: the data plane
# fingerprints (operation, texts, version) since this version, so ids stored by an older one are
# not compared with it (they would conflict with their own retries); they expire on their own.
IDEMPOTENCY_PREFIX = "idem2"


class StoreUnavailableError(ToxiserveError):
    """The shared store cannot be reached and the service is configured to fail closed."""

    status, error_code = 503, "STORE_UNAVAILABLE"


def fault_cause(exc: BaseException) -> str:
    """What an operator should read in the log about a store failure: "disk full", "read-only"..."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    code, text = getattr(cause, "errno", None), str(cause).lower()
    if code in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in text or "disk full" in text:
        return "disk full"
    if code == errno.EROFS or "readonly" in text or "read-only" in text:
        return "read-only"
    if code in (errno.EACCES, errno.EPERM) or isinstance(cause, PermissionError):
        return "permission denied"
    if code == errno.ENOENT or "unable to open database file" in text:
        return "file or directory missing"
    name = type(cause).__name__
    if "Timeout" in name or isinstance(cause, TimeoutError):
        return "timed out"
    if "Connection" in name:  # redis.ConnectionError, ConnectionRefusedError...
        return "unreachable"
    return name


@dataclass(frozen=True)
class Claim:
    """What `claim` found: we own the id (`owned`), or someone's record (done or still pending)."""

    owned: bool
    fingerprint: str | None = None
    response: str | None = None  # the stored response (JSON text) once done

    @property
    def done(self) -> bool:
        return self.response is not None


class IdempotencyBackend(Protocol):
    def claim(self, key: str, fingerprint: str, pending_ttl: float, owner: str) -> Claim:
        """Atomically take `key` for `owner` if free (or its pending claim expired); else report what holds it."""

    def complete(self, key: str, fingerprint: str, response: str, ttl: float) -> None:
        """Store the answer for `key` for `ttl` seconds."""

    def release(self, key: str, fingerprint: str) -> None:
        """Give up a pending claim (the request failed), so a retry can run."""

    def release_owner(self, owner: str) -> int:
        """Give up every pending claim of `owner` (a process that died); returns how many."""

    def ping(self) -> bool:
        """True, or the store's error if it cannot serve a read."""

    def answer(self, key: str) -> str | None:
        """The stored answer (JSON text) for `key`, or None if unknown, expired or still pending."""


class FeedbackBackend(Protocol):
    """Labels fed back for answered requests, and their counts per (version, revision, predicted, actual)."""

    def record(self, key: str, entry: dict, ttl: float, version: str, cell: str) -> bool:
        """Store the label for `key` and count it in `version`'s `cell` ("<revision>|<predicted>|<actual>"),
        atomically, unless `key` already has one (False)."""

    def counts(self, version: str) -> dict[str, int]:
        """cell -> count, for one version."""


FEEDBACK_PREFIX = "feedback"


class RolloutBackend(Protocol):
    """The rollout state (one JSON object with its revision) and its history, shared by every process."""

    def read(self) -> dict | None:
        """The current state, or None before anything was written."""

    def write(self, expected_revision: int, state: dict, entry: dict) -> bool:
        """Compare-and-set: store `state` and append `entry` to the history, atomically, only if the
        stored revision is `expected_revision` (0: nothing stored yet). False on a conflict."""

    def history(self, limit: int, before: int | None = None) -> list[dict]:
        """The newest `limit` history entries (older than the entry with id `before`), newest first,
        each with its `id`."""

    def record_hold(self, entry: dict) -> None:
        """A controller's hold, which changes nothing: folded into the newest entry when that is a
        hold of the same plan at the same revision (`folded_hold`), else appended."""


AUTOMATIC_BY = "controller"  # the `by` of the rollout controller's history entries


def is_automatic(entry: dict) -> bool:
    """An entry the controller wrote (a decision or hold), not an admin change."""
    return entry.get("by") == AUTOMATIC_BY


def folded_hold(newest: dict | None, hold: dict) -> dict | None:
    """`hold` folded into `newest` when both are holds of one plan at one revision: the latest
    reason and evidence, how many holds (`holds`) and since when (`since`). None: append it."""
    same_step = newest is not None and newest.get("decision") == "hold" == hold.get("decision")
    if not same_step or (newest.get("plan"), newest.get("revision")) != (hold.get("plan"), hold.get("revision")):
        return None
    folded = {**hold, "holds": newest.get("holds", 1) + 1, "since": newest.get("since", newest["at"])}
    if "id" in newest:
        folded["id"] = newest["id"]
    return folded


class EvidenceBackend(Protocol):
    """Tallies of routed answers per rollout revision (`"<arm>|<field>" -> n`), added by every
    process and summed here, so a controller on one host sees every host's traffic."""

    def add(self, tallies: dict[int, dict[str, int]]) -> None:
        """Add each revision's tallies to the stored ones, in one transaction / round trip."""

    def read(self, first: int, last: int) -> dict[int, dict[str, int]]:
        """The stored tallies of revisions first..last."""


class LeaseBackend(Protocol):
    """A named lease held by one owner until it expires: one rollout controller across all hosts."""

    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take the lease if it is free or expired, or extend it if `owner` holds it; False if another holds it."""

    def holder(self, name: str) -> tuple[str, float] | None:
        """(owner, seconds left) of an unexpired lease, or None."""

    def release(self, name: str, owner: str) -> None:
        """Give the lease up, if `owner` holds it (a process stopping), so another takes over at once."""


HISTORY_KEEP = 10_000  # newest rollout history entries kept (a plan's holds fold into one per step)
EVIDENCE_TTL = 30 * 86400  # seconds a revision's tallies are kept (Redis); plans are much shorter


@dataclass
class Store:
    url: str
    limits: Storage  # a `limits` storage: the rate-limit algorithms run against it
    idempotency: IdempotencyBackend
    rollout: RolloutBackend
    feedback: FeedbackBackend
    evidence: EvidenceBackend
    leases: LeaseBackend
    errors: tuple[type[BaseException], ...]  # what a backend raises when it is unreachable
    backend: str = "sqlite"
    is_corruption: Callable[[BaseException], bool] = lambda exc: False  # a broken store, not an absent one
