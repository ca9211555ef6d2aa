"""RedisRateLimiter against the real Redis on 127.0.0.1:6379: the shared behaviour suite
(tests/ratelimit_contract.py, its fake clock passed into the Lua script), concurrent
clients on one bucket, the server's clock and key expiry. Each test uses a unique key
prefix that is removed afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from redis.asyncio import Redis

from ragtide.builtin.ratelimit import RateLimiter, RedisRateLimiter
from tests.ratelimit_contract import FakeClock, MakeLimiter, RateLimiterContract

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"


async def _delete_prefix(prefix: str) -> None:
    client = Redis.from_url(URL, decode_responses=True)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test-{uuid.uuid4().hex}"
    yield prefix
    await _delete_prefix(prefix)


class TestRedisRateLimiter(RateLimiterContract):
    @pytest.fixture
    async def make_limiter(self, clock: FakeClock, prefix: str) -> AsyncIterator[MakeLimiter]:
        """A new client (its own connection pool) per call, all on one key prefix."""
        async with AsyncExitStack() as stack:

            async def make(rate_per_s: float, burst: int) -> RateLimiter:
                config = RedisRateLimiter.Config(
                    url=URL, key_prefix=prefix, rate_per_s=rate_per_s, burst=burst
                )
                limiter = RedisRateLimiter(config, clock=clock)
                await limiter.start()
                stack.push_async_callback(limiter.aclose)
                return limiter

            yield make

    @pytest.mark.anyio
    async def test_concurrent_checks_from_two_clients_never_over_admit(
        self, make_limiter: MakeLimiter
    ) -> None:
        # Two clients with their own connections, 50 checks in flight at once: the Lua
        # script is the only thing that keeps them from both seeing a full bucket.
        a, b = await make_limiter(1.0, 10), await make_limiter(1.0, 10)
        assert a is not b
        decisions = await asyncio.gather(*(lim.check("hot") for lim in (a, b) * 25))
        assert sum(d.allowed for d in decisions) == 10
        assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


@pytest.mark.anyio
async def test_redis_limiter_on_the_server_clock(prefix: str) -> None:
    config = RedisRateLimiter.Config(url=URL, key_prefix=prefix, rate_per_s=0.001, burst=3)
    limiter = RedisRateLimiter(config)  # no clock: the script reads Redis TIME
    await limiter.start()
    try:
        assert [(await limiter.check("k")).allowed for _ in range(4)] == [True, True, True, False]
        refused = await limiter.check("k")
        assert 900 < refused.retry_after <= 1000  # one token at 0.001/s
    finally:
        await limiter.aclose()


@pytest.mark.anyio
async def test_redis_bucket_expires_once_it_would_be_full(prefix: str) -> None:
    config = RedisRateLimiter.Config(url=URL, key_prefix=prefix, rate_per_s=1, burst=2000)
    limiter = RedisRateLimiter(config)
    await limiter.start()
    await limiter.check("k")
    await limiter.aclose()
    client = Redis.from_url(URL, decode_responses=True)
    try:
        # 2000 s to refill + 1 s slack, in ms: a TTL the script sets, read back (the
        # margin below it is for the read, not a timing bound)
        assert 2_000_000 < await client.pttl(f"{prefix}:rl:k") <= 2_001_000
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_a_redis_counter_expires_from_its_first_use(prefix: str) -> None:
    limiter = RedisRateLimiter(RedisRateLimiter.Config(url=URL, key_prefix=prefix))
    await limiter.start()
    try:
        await limiter.add("day", 1, 100)
        client = Redis.from_url(URL, decode_responses=True)
        first = await client.ttl(f"{prefix}:quota:day")
        await limiter.add("day", 1, 100_000)  # a later add does not extend it
        assert 0 < await client.ttl(f"{prefix}:quota:day") <= first <= 100
        assert await limiter.add("day", 0, 100) == 2
        await client.aclose()
    finally:
        await limiter.aclose()
