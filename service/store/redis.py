"""Redis store: rate limits and idempotency shared by every host pointing at the same server."""

from __future__ import annotations

import json
import time

import redis
from limits.errors import StorageError
from limits.storage import RedisStorage

from .base import Claim, Store

# Delete only our own pending claim: a finished record or someone else's newer claim stays.
_RELEASE = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)['fingerprint'] == ARGV[1] and cjson.decode(value)['response'] == nil then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# limits' own incr_expire.lua, plus the key's remaining time to live: one round trip where the
# generic path (hit, then get + ttl for the rate-limit headers) takes three.
_INCR_EXPIRE_TTL = """
local amount = tonumber(ARGV[2])
local current = redis.call('incrby', KEYS[1], amount)
if tonumber(current) == amount then
  redis.call('expire', KEYS[1], ARGV[1])
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
        self.prefix = f"{namespace}:idem:"
        self._release = client.register_script(_RELEASE)

    def claim(self, key: str, fingerprint: str, pending_ttl: float) -> Claim:
        name = self.prefix + key
        record = json.dumps({"fingerprint": fingerprint})
        if self.client.set(name, record, nx=True, px=max(1, int(pending_ttl * 1000))):
            return Claim(owned=True)
        raw = self.client.get(name)
        if raw is None:  # expired between SET and GET
            return self.claim(key, fingerprint, pending_ttl)
        found = json.loads(raw)
        return Claim(owned=False, fingerprint=found["fingerprint"], response=found.get("response"))

    def complete(self, key: str, fingerprint: str, response: str, ttl: float) -> None:
        record = json.dumps({"fingerprint": fingerprint, "response": response})
        self.client.set(self.prefix + key, record, px=max(1, int(ttl * 1000)))

    def release(self, key: str, fingerprint: str) -> None:
        self._release(keys=[self.prefix + key], args=[fingerprint])


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
        errors=(redis.RedisError, StorageError),
    )
