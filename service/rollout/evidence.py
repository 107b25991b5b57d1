"""Evidence for the rollout controller: what each arm of the router answered, per rollout revision.

Every serving process tallies its routed answers in memory: per (revision, arm) the answers, the
server errors (5xx after routing: the model raised, its deadline passed), a latency histogram and
a score histogram; and the shadow comparisons. Its follower thread adds them to the shared store
once per poll (one transaction or round trip), so the request path pays a dict update under a
lock, never a store call, and a controller on any host reads every host's traffic. A flush that
fails is kept and added to the next one: a store outage delays evidence, it does not lose it.

Tallies are keyed `"<key id>/<arm>|<field>"`, per API key so that no key's traffic can stand for
everyone's (`key_weights`): `answered`, `errors`, `latency:<bucket>` (per text), `score:<bin>`; and
`shadow|compared`, `shadow|agreed`. A step's window is the revisions it spans.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from shared_features.errors import ToxiserveError

log = logging.getLogger(__name__)

# Latency buckets grow by 2^(1/4) (19 %) from 0.1 ms: bucket i holds (BASE*G^(i-1), BASE*G^i].
LATENCY_BASE = 1e-4
LATENCY_GROWTH = 2**0.25
LATENCY_BUCKETS = 80  # up to ~100 s; slower lands in the last
SCORE_BINS = 10  # equal-width bins of P(toxic) on [0, 1]


def latency_bucket(seconds: float) -> int:
    if seconds <= LATENCY_BASE:
        return 0
    return min(LATENCY_BUCKETS - 1, math.ceil(math.log(seconds / LATENCY_BASE, LATENCY_GROWTH) - 1e-9))


def score_bin(score: float) -> int:
    return min(SCORE_BINS - 1, max(0, int(score * SCORE_BINS)))


def quantile(buckets: list[int], q: float) -> float | None:
    """The q-quantile (seconds) of a latency histogram, interpolated geometrically inside its bucket."""
    total = sum(buckets)
    if not total:
        return None
    rank, seen = q * total, 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            upper = LATENCY_BASE * LATENCY_GROWTH**index
            lower = upper / LATENCY_GROWTH if index else 0.0
            fraction = (rank - seen) / count
            return lower * (upper / lower) ** fraction if lower else upper * fraction
        seen += count
    return LATENCY_BASE * LATENCY_GROWTH ** (len(buckets) - 1)


def count_above(buckets: list[int], seconds: float) -> float:
    """How many samples of a latency histogram are slower than `seconds` (the bucket holding it
    counted in proportion, geometrically, as `quantile` interpolates)."""
    above = 0.0
    for index, count in enumerate(buckets):
        if not count:
            continue
        upper = LATENCY_BASE * LATENCY_GROWTH**index
        lower = upper / LATENCY_GROWTH if index else 0.0
        if lower >= seconds:
            above += count
        elif upper > seconds:
            share = math.log(upper / seconds) / math.log(upper / lower) if lower else 1 - seconds / upper
            above += count * share
    return above


def key_weights(
    counts: dict[str, float], max_share: float | None, answered: dict[str, float] | None = None
) -> dict[str, float]:
    """The weight of each API key's evidence on an arm: 1, or less for a key whose count is more
    than `max_share` against everyone else's, so that it counts for at most
    max_share / (1 - max_share) times the other keys' counts together (at 0.5: as much as all of
    them). A key alone is all the traffic there is, and keeps its weight (so does everyone, with no
    cap); keys with nothing counted do not shrink anyone.

    With `answered`, only keys that have answers weigh others down. A key whose requests all
    fail (batches past their deadline) is capped against the others like any key, but it is no
    traffic to measure anyone against: the error-rate guardrail compares its errors with its own
    stable rate. So its failures cannot make a busy honest key count as little as they do.

    No floor: a busy key beside a sparse key that has answers weighs as little as the sparse one, so
    a plan holds until the other keys together have half of min_requests (docs/rollouts.md). A floor
    at min_requests was tried: it let a flooding key decide a step while the other keys had fewer."""
    present = {key: n for key, n in counts.items() if n > 0}
    weights = dict.fromkeys(counts, 1.0)
    if max_share is None or max_share >= 1 or len(present) < 2:
        return weights
    peers = {key: n for key, n in present.items() if answered is None or answered.get(key, 0) > 0}
    if not peers:  # every key's requests failed: they are measured against each other
        peers = present
    peer_total, ratio = sum(peers.values()), max_share / (1 - max_share)
    for key, n in present.items():
        others = peer_total - peers.get(key, 0)
        if key in peers and len(peers) < 2:
            continue  # the only key with answers: all the traffic there is
        weights[key] = min(1.0, ratio * others / n)
    return weights


@dataclass(frozen=True)
class ArmEvidence:
    """One arm's tallies over a window of revisions, each key's weighted by `key_weights`."""

    answered: float
    errors: float
    latency: list[float]
    scores: list[float]
    keys: int = 0  # API keys whose traffic this arm answered
    capped_keys: int = 0  # of them, how many sent more than the cap allows and count for less
    # Per API key: (requests, errors), weighted as above; the error rate compares arms key by key.
    requests_by_key: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def requests(self) -> float:
        return self.answered + self.errors

    def by_key(self) -> dict[str, tuple[float, float]]:
        """(requests, errors) per API key; an arm built without them is one key's."""
        return self.requests_by_key or {"": (self.requests, self.errors)}

    @classmethod
    def of(cls, tallies: dict[str, int], arm: str, max_key_share: float | None = None) -> ArmEvidence:
        per_key: dict[str, dict[str, int]] = defaultdict(dict)
        for name, n in tallies.items():
            key, slash, rest = name.rpartition("/") if "/" in name else ("", "", name)
            if rest.startswith(f"{arm}|"):
                per_key[key][rest[len(arm) + 1 :]] = n
        # Each count is capped in its own unit: requests for answers and errors, texts for latency
        # and scores (one batch of 300 texts is one request but 300 samples).
        requests = {key: fields.get("answered", 0) + fields.get("errors", 0) for key, fields in per_key.items()}
        texts = {key: sum(n for f, n in fields.items() if f.startswith("latency:")) for key, fields in per_key.items()}
        answers = {key: fields.get("answered", 0) for key, fields in per_key.items()}
        by_request, by_text = key_weights(requests, max_key_share, answers), key_weights(texts, max_key_share)
        answered = errors = 0.0
        latency, scores = [0.0] * LATENCY_BUCKETS, [0.0] * SCORE_BINS
        for key, fields in per_key.items():
            for field, n in fields.items():
                if field == "answered":
                    answered += by_request[key] * n
                elif field == "errors":
                    errors += by_request[key] * n
                elif field.startswith("latency:"):
                    latency[min(int(field[8:]), LATENCY_BUCKETS - 1)] += by_text[key] * n
                elif field.startswith("score:"):
                    scores[min(int(field[6:]), SCORE_BINS - 1)] += by_text[key] * n
        capped = sum(1 for key in per_key if by_request[key] < 1 or by_text[key] < 1)
        weighted = {
            key: (by_request[key] * n, by_request[key] * per_key[key].get("errors", 0))
            for key, n in requests.items()
            if n
        }
        return cls(answered, errors, latency, scores, len(per_key), capped, weighted)


ARMS = ("stable", "canary")
# Every tally key, built once: the request path indexes these instead of formatting strings.
_KEYS = {
    arm: {
        "answered": f"{arm}|answered",
        "errors": f"{arm}|errors",
        "latency": [f"{arm}|latency:{i}" for i in range(LATENCY_BUCKETS)],
        "score": [f"{arm}|score:{i}" for i in range(SCORE_BINS)],
    }
    for arm in ARMS
}


def summed(by_revision: dict[int, dict[str, int]]) -> dict[str, int]:
    """One window's tallies: the revisions' tallies added up."""
    total: Counter = Counter()
    for tallies in by_revision.values():
        total.update(tallies)
    return dict(total)


class EvidenceRecorder:
    """This process's tallies since its last flush."""

    def __init__(self, backend, call_store: Callable) -> None:
        self.backend = backend
        self.call_store = call_store
        self._pending: dict[int, defaultdict] = {}
        self._lock = threading.Lock()

    def _tally(self, revision: int) -> defaultdict:
        tally = self._pending.get(revision)
        if tally is None:
            tally = self._pending[revision] = defaultdict(int)
        return tally

    def answered(self, revision: int, arm: str, seconds: float, scores: list[float], key_id: str = "") -> None:
        """A routed request answered: its latency (request start to answer) and its scores.

        Latency is tallied per text: a batch of N texts is N samples of seconds / N. So one client's
        batches neither stand for one slow answer nor outweigh everyone else's single texts."""
        keys, prefix = _KEYS[arm], f"{key_id}/"
        texts = max(1, len(scores))
        bucket = latency_bucket(seconds / texts)
        with self._lock:
            tally = self._tally(revision)
            tally[prefix + keys["answered"]] += 1
            tally[prefix + keys["latency"][bucket]] += texts
            for score in scores:
                tally[prefix + keys["score"][score_bin(score)]] += 1

    def failed(self, revision: int, arm: str, key_id: str = "") -> None:
        """A routed request that got a server error after routing (the arm's fault, not the client's)."""
        with self._lock:
            self._tally(revision)[f"{key_id}/" + _KEYS[arm]["errors"]] += 1

    def shadowed(self, revision: int, compared: int, agreed: int) -> None:
        with self._lock:
            tally = self._tally(revision)
            tally["shadow|compared"] += compared
            tally["shadow|agreed"] += agreed

    def flush(self) -> bool:
        """Add what was tallied to the store; on failure keep it for the next flush. True if flushed."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return True
        try:
            self.call_store("evidence", self.backend.add, {r: dict(t) for r, t in pending.items()}, strict=True)
            return True
        except ToxiserveError:
            with self._lock:
                for revision, tally in pending.items():
                    kept = self._tally(revision)
                    for name, n in tally.items():
                        kept[name] += n
            return False

    def window(self, first: int, last: int) -> dict[str, int]:
        """Every process's flushed tallies for revisions first..last (StoreUnavailableError if the store fails)."""
        if last < first:
            return {}
        return summed(self.call_store("evidence", self.backend.read, first, last, strict=True))
