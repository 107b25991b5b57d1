"""Redis store: rate limits and idempotency shared by every host pointing at the same server."""

from __future__ import annotations

import json
import time

import redis
from limits.errors import StorageError
from limits.storage import RedisStorage

from service.store.base import (
    EVIDENCE_TTL,
    FEEDBACK_PREFIX,
    HISTORY_KEEP,
    IDEMPOTENCY_PREFIX,
    Claim,
    Store,
    folded_hold,
    is_automatic,
)

# Take the id if free and file it under its owner (a process), or return what holds it: one round
# trip either way. The owner's set lets the gunicorn master free a dead worker's claims at once.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SADD', KEYS[2], KEYS[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {1}
end
return {0, redis.call('GET', KEYS[1])}
"""

# Delete only our own pending claim: a finished record or someone else's newer claim stays.
_RELEASE = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)['fingerprint'] == ARGV[1] and cjson.decode(value)['response'] == nil then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Every pending claim a dead process left: deleted unless it finished or someone else took it over.
_RELEASE_OWNER = """
local released = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', key)
  if value then
    local record = cjson.decode(value)
    if record['owner'] == ARGV[1] and record['response'] == nil then
      redis.call('DEL', key)
      released = released + 1
    end
  end
end
redis.call('DEL', KEYS[1])
return released
"""


# limits' own incr_expire.lua, plus the key's remaining time to live: one round trip where the
# generic path (hit, then get + ttl for the rate-limit headers) takes three.
_INCR_EXPIRE_TTL = """
local amount = tonumber(ARGV[2])
local current = redis.call('incrby', KEYS[1], amount)
if tonumber(current) == amount then
  redis.call('expire', KEYS[1], ARGV[1])
end
if tonumber(current) < 0 then  -- a refund that outlived its window
  redis.call('set', KEYS[1], 0, 'KEEPTTL')
  current = 0
end
return {current, redis.call('pttl', KEYS[1])}
"""


class RedisLimitsStorage(RedisStorage):
    """limits' RedisStorage, same keys and semantics, with `incr_with_expiry` in one round trip."""

    STORAGE_SCHEME = ["toxiserve+redis"]

    def incr_with_expiry(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        try:
            if not hasattr(self, "_incr_expire_ttl"):
                self._incr_expire_ttl = self.get_connection().register_script(_INCR_EXPIRE_TTL)
            current, ttl_ms = self._incr_expire_ttl([self.prefixed_key(key)], [int(expiry), amount])
        except self.base_exceptions as exc:
            raise StorageError(exc) from exc
        return int(current), time.time() + max(int(ttl_ms), 0) / 1000


class RedisIdempotency:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.prefix = f"{namespace}:{IDEMPOTENCY_PREFIX}:"
        self.owners_prefix = f"{namespace}:idem-owner:"
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._release_owner = client.register_script(_RELEASE_OWNER)

    def claim(self, key: str, fingerprint: str, pending_ttl: float, owner: str) -> Claim:
        record = json.dumps({"fingerprint": fingerprint, "owner": owner})
        found = self._claim(
            keys=[self.prefix + key, self.owners_prefix + owner], args=[record, max(1, int(pending_ttl * 1000))]
        )
        if found[0] == 1:
            return Claim(owned=True)
        if found[1] is None:  # expired in between: try again
            return self.claim(key, fingerprint, pending_ttl, owner)
        held = json.loads(found[1])
        return Claim(owned=False, fingerprint=held["fingerprint"], response=held.get("response"))

    def complete(self, key: str, fingerprint: str, response: str, ttl: float) -> None:
        record = json.dumps({"fingerprint": fingerprint, "response": response})
        self.client.set(self.prefix + key, record, px=max(1, int(ttl * 1000)))

    def release(self, key: str, fingerprint: str) -> None:
        self._release(keys=[self.prefix + key], args=[fingerprint])

    def release_owner(self, owner: str) -> int:
        return int(self._release_owner(keys=[self.owners_prefix + owner], args=[owner]))

    def ping(self) -> bool:
        """A write, not a PING: a Redis that refuses writes (MISCONF on a full disk, a read-only
        replica) is not healthy."""
        return bool(self.client.set(f"{self.prefix}health", "1", ex=60))

    def answer(self, key: str) -> str | None:
        found = self.client.get(self.prefix + key)
        return json.loads(found).get("response") if found else None


# The label, once per request (SET NX with the answer's lifetime), and its count, in one round trip.
_FEEDBACK_RECORD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  return 1
end
return 0
"""


class RedisFeedback:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.prefix = f"{namespace}:{FEEDBACK_PREFIX}:"
        self.counts_prefix = f"{namespace}:{FEEDBACK_PREFIX}-counts:"
        self._record = client.register_script(_FEEDBACK_RECORD)

    def record(self, key: str, entry: dict, ttl: float, version: str, cell: str) -> bool:
        keys = [self.prefix + key, self.counts_prefix + version]
        return bool(self._record(keys=keys, args=[json.dumps(entry), max(1, int(ttl * 1000)), cell]))

    def counts(self, version: str) -> dict[str, int]:
        return {cell.decode(): int(n) for cell, n in self.client.hgetall(self.counts_prefix + version).items()}


# Compare-and-set of the rollout state and its history entry, in one round trip. Each entry gets
# the next id of KEYS[3] (`"id":` is spliced into its JSON, which Python wrote as an object). The
# history (KEYS[2]) keeps the newest ARGV[4] entries; an admin change (ARGV[5] = "admin", decided in
# Python: no JSON decoding in the script) is also kept in KEYS[4], so automatic entries never push
# one out of the history.
_NEW_ENTRY = """
local function push(entry)
  local id = redis.call('INCR', KEYS[3])
  local stored = '{"id": ' .. id .. ', ' .. string.sub(entry, 2)
  redis.call('LPUSH', KEYS[2], stored)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
  if ARGV[5] == 'admin' then
    redis.call('LPUSH', KEYS[4], stored)
    redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
  end
end
"""
_ROLLOUT_WRITE = (
    _NEW_ENTRY
    + """
local current = redis.call('GET', KEYS[1])
local revision = 0
if current then revision = cjson.decode(current)['revision'] end
if revision ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
push(ARGV[3])
return 1
"""
)
# A hold: ARGV[2] replaces the newest entry (keeping its id) when Python folded it into that one
# (ARGV[1] is the newest entry's JSON that it read, so a concurrent write makes it append instead).
_RECORD_HOLD = (
    _NEW_ENTRY
    + """
local newest = redis.call('LINDEX', KEYS[2], 0)
if ARGV[2] ~= '' and newest == ARGV[1] then
  redis.call('LSET', KEYS[2], 0, ARGV[2])
else
  push(ARGV[3])
end
return 1
"""
)


class RedisRollout:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.keys = [
            f"{namespace}:rollout",
            f"{namespace}:rollout:history",
            f"{namespace}:rollout:history-id",
            f"{namespace}:rollout:history-admin",
        ]
        self._write = client.register_script(_ROLLOUT_WRITE)
        self._record_hold = client.register_script(_RECORD_HOLD)

    def read(self) -> dict | None:
        found = self.client.get(self.keys[0])
        return json.loads(found) if found else None

    def write(self, expected_revision: int, state: dict, entry: dict) -> bool:
        kind = "automatic" if is_automatic(entry) else "admin"
        args = [expected_revision, json.dumps(state), json.dumps(entry), HISTORY_KEEP, kind]
        return bool(self._write(keys=self.keys, args=args))

    def record_hold(self, entry: dict) -> None:
        newest = self.client.lindex(self.keys[1], 0)
        folded = folded_hold(json.loads(newest) if newest else None, entry)
        kind = "automatic" if is_automatic(entry) else "admin"
        args = [newest or "", json.dumps(folded) if folded else "", json.dumps(entry), HISTORY_KEEP, kind]
        self._record_hold(keys=self.keys, args=args)

    def history(self, limit: int, before: int | None = None) -> list[dict]:
        """Newest first; `before` pages back by id. Past the history's oldest entry, the admin
        changes that automatic entries pushed out of it."""
        found = self._entries(self.keys[1], limit, before)
        if len(found) < limit:
            oldest = self.client.lindex(self.keys[1], -1)
            floors = [json.loads(oldest)["id"]] if oldest else []
            floors += [before] if before is not None else []
            found += self._entries(self.keys[3], limit - len(found), min(floors) if floors else None)
        return found

    def _entries(self, key: str, limit: int, before: int | None) -> list[dict]:
        """Up to `limit` entries of a list (newest first) with ids below `before`, read in chunks."""
        found, start, chunk = [], 0, max(limit, 200)
        while len(found) < limit:
            entries = self.client.lrange(key, start, start + chunk - 1)
            if not entries:
                break
            for raw in entries:
                entry = json.loads(raw)
                if before is None or entry.get("id", 0) < before:
                    found.append(entry)
            start += chunk
        return found[:limit]


class RedisEvidence:
    """One hash per revision; a flush is one pipelined round trip of HINCRBYs."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client, self.prefix = client, f"{namespace}:evidence:"

    def add(self, tallies: dict[int, dict[str, int]]) -> None:
        pipe = self.client.pipeline(transaction=True)  # MULTI: a flush counts whole or not at all
        for revision, fields in tallies.items():
            key = f"{self.prefix}{revision}"
            for name, n in fields.items():
                pipe.hincrby(key, name, n)
            pipe.expire(key, EVIDENCE_TTL)
        pipe.execute()

    def read(self, first: int, last: int) -> dict[int, dict[str, int]]:
        pipe = self.client.pipeline(transaction=False)
        revisions = list(range(first, last + 1))
        for revision in revisions:
            pipe.hgetall(f"{self.prefix}{revision}")
        found = {}
        for revision, fields in zip(revisions, pipe.execute(), strict=True):
            if fields:
                found[revision] = {name.decode(): int(n) for name, n in fields.items()}
        return found


# Take the lease if free, or extend it if ours: one round trip, so two processes can't both hold it.
_LEASE_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLeases:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client, self.prefix = client, f"{namespace}:lease:"
        self._acquire = client.register_script(_LEASE_ACQUIRE)
        self._release = client.register_script(_LEASE_RELEASE)

    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        return bool(self._acquire(keys=[self.prefix + name], args=[owner, max(1, int(ttl * 1000))]))

    def holder(self, name: str) -> tuple[str, float] | None:
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.prefix + name)
        pipe.pttl(self.prefix + name)
        owner, ttl_ms = pipe.execute()
        return (owner.decode(), max(0, ttl_ms) / 1000) if owner else None

    def release(self, name: str, owner: str) -> None:
        self._release(keys=[self.prefix + name], args=[owner])


def open_redis_store(url: str, namespace: str, timeout: float) -> Store:
    # Short timeouts: a dead Redis must cost a request milliseconds, not the worker timeout.
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    limits_storage = RedisLimitsStorage(
        url, connection_pool=client.connection_pool, key_prefix=f"{namespace}:limits", wrap_exceptions=True
    )
    return Store(
        url=url,
        limits=limits_storage,
        idempotency=RedisIdempotency(client, namespace),
        rollout=RedisRollout(client, namespace),
        feedback=RedisFeedback(client, namespace),
        evidence=RedisEvidence(client, namespace),
        leases=RedisLeases(client, namespace),
        errors=(redis.RedisError, StorageError),
        backend="redis",
    )
