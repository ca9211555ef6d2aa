"""Token-bucket rate limiting per key, in one process or shared through Redis.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; a check of ``cost``
tokens is admitted when the bucket holds that many. Build keys with :func:`rate_key`
(namespace plus a hash of the API key or client address), so secrets never appear in
Redis key names.

``RedisRateLimiter`` runs the whole check in one Lua script, so any number of replicas
checking one key at once never admit more than the bucket allows. The script uses the
Redis server's clock unless a ``clock`` is injected (tests do, to refill without
sleeping). When Redis is down ``check`` raises ``BackendUnavailable``; a caller may
choose to fail open (admit, log and count it) rather than turn an outage of the limiter
into an outage of the service.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ragtide.builtin.redis_memory import RedisClient, RedisConnectionConfig, key_part, redis_errors
from ragtide.components import RateLimiter
from ragtide.types import RateDecision

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = [
    "Decision",
    "InMemoryRateLimiter",
    "RateLimiter",
    "RateLimiterConfig",
    "RedisRateLimiter",
    "rate_key",
]


Decision = RateDecision  # the verdict type lives in the core


class RateLimiterConfig(BaseModel):
    rate_per_s: float = Field(5.0, gt=0, description="Tokens added per second.")
    burst: int = Field(20, gt=0, description="Bucket size: the most admitted at once.")


def rate_key(namespace: str, client: str) -> str:
    """A limiter key for (namespace, API key or client address) that never reveals ``client``."""
    digest = hashlib.sha256(client.encode()).hexdigest()[:32]
    return f"{key_part(namespace)}:{digest}"


def _validate_cost(cost: int, burst: int) -> None:
    if not 0 < cost <= burst:
        raise ValueError(f"cost must be between 1 and burst ({burst}), got {cost}")


class InMemoryRateLimiter:
    """``RateLimiter`` for one process; keeps at most ``max_keys`` buckets (LRU).

    A bucket evicted after being idle for ``burst / rate_per_s`` seconds was full anyway,
    so eviction only loses state for keys that are both busy and very numerous.
    """

    class Config(RateLimiterConfig):
        max_keys: int = Field(100_000, gt=0)

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._counters: OrderedDict[str, tuple[int, float]] = OrderedDict()  # value, expires

    async def ping(self) -> None:
        return None

    async def check(
        self,
        key: str,
        cost: int = 1,
        *,
        rate_per_s: float | None = None,
        burst: int | None = None,
    ) -> Decision:
        rate = rate_per_s or self._config.rate_per_s
        burst = burst or self._config.burst
        _validate_cost(cost, burst)
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(burst), now))
        if now > at:
            tokens, at = min(float(burst), tokens + (now - at) * rate), now
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, at)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._config.max_keys:
            self._buckets.popitem(last=False)
        retry_after = 0.0 if allowed else (cost - tokens) / rate
        return Decision(allowed, math.floor(tokens), retry_after)

    async def add(self, key: str, amount: int, ttl_s: int) -> int:
        now = self._clock()
        value, expires = self._counters.get(key, (0, now + ttl_s))
        if now >= expires:
            value, expires = 0, now + ttl_s
        value += amount
        self._counters[key] = (value, expires)
        self._counters.move_to_end(key)
        while len(self._counters) > self._config.max_keys:
            self._counters.popitem(last=False)
        return value


# KEYS[1] bucket hash; ARGV: rate per second, burst, cost, now in seconds ("" = server
# clock), idle TTL in ms. Returns {allowed, tokens left, retry_after} (numbers as strings:
# Lua numbers would be truncated to integers in the reply).
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local allowed = 0
local retry_after = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_after = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%.17g', at))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {allowed, string.format('%.17g', tokens), string.format('%.17g', retry_after)}
"""


# KEYS[1] counter; ARGV: amount, TTL in seconds. The TTL is set when the counter is
# created, so a day's quota expires a day after its first use.
_COUNTER = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return v
"""


class RedisRateLimiter(RedisClient):
    """``RateLimiter`` shared by every replica: one small hash per key, updated atomically.

    Key: ``{prefix}:rl:{key}``; it expires once the bucket would be full again.
    """

    class Config(RateLimiterConfig, RedisConnectionConfig):
        pass

    def __init__(self, config: Config, *, clock: Callable[[], float] | None = None) -> None:
        super().__init__(config)
        self._config = config
        self._clock = clock
        self._script: AsyncScript | None = None
        self._counter: AsyncScript | None = None

    async def start(self) -> None:
        await super().start()
        if self._script is None:
            self._script = self._redis.register_script(_TOKEN_BUCKET)
            self._counter = self._redis.register_script(_COUNTER)

    async def aclose(self) -> None:
        self._script = self._counter = None
        await super().aclose()

    async def ping(self) -> None:
        await self._ping()

    async def check(
        self,
        key: str,
        cost: int = 1,
        *,
        rate_per_s: float | None = None,
        burst: int | None = None,
    ) -> Decision:
        if self._script is None:
            raise RuntimeError("RedisRateLimiter.start() must be awaited before use")
        rate_f = rate_per_s or self._config.rate_per_s
        burst = burst or self._config.burst
        _validate_cost(cost, burst)
        now = "" if self._clock is None else repr(self._clock())
        # Idle buckets refill completely after burst / rate seconds; keep them a little longer.
        idle_ms = math.ceil(burst / rate_f * 1000) + 1000
        args: list[str | int] = [repr(rate_f), burst, cost, now, idle_ms]
        async with redis_errors("rate limit check", self._config.retry_after_s):
            allowed, tokens, retry_after = await self._script(
                keys=[f"{self._config.key_prefix}:rl:{key}"], args=args
            )
        return Decision(bool(allowed), math.floor(float(tokens)), float(retry_after))

    async def add(self, key: str, amount: int, ttl_s: int) -> int:
        if self._counter is None:
            raise RuntimeError("RedisRateLimiter.start() must be awaited before use")
        async with redis_errors("quota count", self._config.retry_after_s):
            value = await self._counter(
                keys=[f"{self._config.key_prefix}:quota:{key}"], args=[amount, ttl_s]
            )
        return int(value)
