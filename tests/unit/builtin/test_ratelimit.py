"""Token-bucket limiters: one behaviour suite for both, driven by a fake clock (no sleeps).

The Redis half is marked ``integration`` and uses the real Redis on 127.0.0.1:6379 under a
unique key prefix that is removed afterwards; its fake clock is passed into the Lua script.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import anyio
import pytest
from redis.asyncio import Redis

from ragtide.builtin.ratelimit import (
    Decision,
    InMemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    rate_key,
)
from ragtide.errors import BackendUnavailable

URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


MakeLimiter = Callable[[float, int], Awaitable[RateLimiter]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test-{uuid.uuid4().hex}"
    yield prefix
    await _delete_prefix(prefix)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def make_limiter(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[MakeLimiter]:
    """Build limiters that share state (for redis: one prefix, a client each)."""
    async with AsyncExitStack() as stack:
        prefix = f"test-{uuid.uuid4().hex}"
        memory: dict[tuple[float, int], InMemoryRateLimiter] = {}

        async def make(rate_per_s: float, burst: int) -> RateLimiter:
            if request.param == "memory":
                config = InMemoryRateLimiter.Config(rate_per_s=rate_per_s, burst=burst)
                return memory.setdefault(
                    (rate_per_s, burst), InMemoryRateLimiter(config, clock=clock)
                )
            limiter = RedisRateLimiter(
                RedisRateLimiter.Config(
                    url=URL, key_prefix=prefix, rate_per_s=rate_per_s, burst=burst
                ),
                clock=clock,
            )
            await limiter.start()
            stack.push_async_callback(limiter.aclose)
            return limiter

        if request.param == "redis":
            stack.push_async_callback(_delete_prefix, prefix)
        yield make


async def _delete_prefix(prefix: str) -> None:
    client = Redis.from_url(URL, decode_responses=True)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --- behaviour suite: both limiters -------------------------------------------------------


@pytest.mark.anyio
async def test_is_a_rate_limiter(make_limiter: MakeLimiter) -> None:
    assert isinstance(await make_limiter(1, 1), RateLimiter)


@pytest.mark.anyio
async def test_burst_is_admitted_then_refused_with_retry_after(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter(2.0, 5)
    decisions = [await limiter.check("k") for _ in range(5)]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.allowed and d.retry_after == 0 for d in decisions)
    refused = await limiter.check("k")
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after == pytest.approx(0.5)  # one token at 2 per second


@pytest.mark.anyio
async def test_tokens_refill_with_time(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = await make_limiter(2.0, 3)
    for _ in range(3):
        assert (await limiter.check("k")).allowed
    clock.now += 0.5  # one token back
    assert (await limiter.check("k")).allowed
    refused = await limiter.check("k")
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    clock.now += 0.25  # half a token: still refused, and the wait shrinks
    assert (await limiter.check("k")).retry_after == pytest.approx(0.25)


@pytest.mark.anyio
async def test_refill_is_capped_at_burst(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = await make_limiter(10.0, 4)
    await limiter.check("k")
    clock.now += 3600
    assert (await limiter.check("k")).remaining == 3


@pytest.mark.anyio
async def test_cost_takes_several_tokens(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter(1.0, 10)
    assert await limiter.check("k", cost=4) == Decision(True, 6, 0.0)
    refused = await limiter.check("k", cost=7)
    assert not refused.allowed and refused.remaining == 6
    assert refused.retry_after == pytest.approx(1.0)
    assert (await limiter.check("k", cost=6)).allowed  # a refusal takes nothing


@pytest.mark.anyio
async def test_cost_outside_one_to_burst_is_a_usage_error(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter(1.0, 3)
    for cost in (0, -1, 4):
        with pytest.raises(ValueError, match="cost"):
            await limiter.check("k", cost=cost)


@pytest.mark.anyio
async def test_keys_have_separate_buckets(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter(1.0, 1)
    assert (await limiter.check(rate_key("ns", "client-a"))).allowed
    assert not (await limiter.check(rate_key("ns", "client-a"))).allowed
    assert (await limiter.check(rate_key("ns", "client-b"))).allowed
    assert (await limiter.check(rate_key("other", "client-a"))).allowed


@pytest.mark.anyio
async def test_concurrent_checks_from_two_clients_never_over_admit(
    make_limiter: MakeLimiter,
) -> None:
    a, b = await make_limiter(1.0, 10), await make_limiter(1.0, 10)
    decisions = await asyncio.gather(*(lim.check("hot") for lim in (a, b) * 25))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


# --- implementation specifics -------------------------------------------------------------


def test_rate_key_hides_the_client_and_keeps_namespaces_apart() -> None:
    key = rate_key("docs", "sk-live-secret")
    assert "secret" not in key and key.startswith("docs:")
    assert key == rate_key("docs", "sk-live-secret")
    assert rate_key("a:b", "c") != rate_key("a", "b:c")


@pytest.mark.anyio
async def test_memory_limiter_keeps_at_most_max_keys(clock: FakeClock) -> None:
    config = InMemoryRateLimiter.Config(rate_per_s=1, burst=1, max_keys=2)
    limiter = InMemoryRateLimiter(config, clock=clock)
    for key in ("a", "b", "c"):
        assert (await limiter.check(key)).allowed
    assert (await limiter.check("a")).allowed  # "a" was evicted: a full bucket again
    assert not (await limiter.check("c")).allowed


@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.anyio
async def test_redis_bucket_expires_once_it_would_be_full(prefix: str) -> None:
    config = RedisRateLimiter.Config(url=URL, key_prefix=prefix, rate_per_s=10, burst=20)
    limiter = RedisRateLimiter(config)
    await limiter.start()
    await limiter.check("k")
    await limiter.aclose()
    client = Redis.from_url(URL, decode_responses=True)
    try:
        assert 0 < await client.pttl(f"{prefix}:rl:k") <= 3000  # 2 s to refill + 1 s slack
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_redis_down_is_backend_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limiter = RedisRateLimiter(RedisRateLimiter.Config(url=f"redis://127.0.0.1:{port}/0"))
    await limiter.start()
    try:
        with anyio.fail_after(10), pytest.raises(BackendUnavailable):  # fail_after: hang guard
            await limiter.check("k")
    finally:
        await limiter.aclose()


@pytest.mark.anyio
async def test_redis_limiter_must_be_started() -> None:
    limiter = RedisRateLimiter(RedisRateLimiter.Config())
    with pytest.raises(RuntimeError, match="start"):
        await limiter.check("k")


# --- per-key rates (tenant quotas) and quota counters -------------------------------------


@pytest.mark.anyio
async def test_a_key_may_carry_its_own_rate_and_burst(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter(1.0, 1)
    own = [await limiter.check("tenant-a", rate_per_s=2.0, burst=3) for _ in range(3)]
    assert all(d.allowed for d in own) and [d.remaining for d in own] == [2, 1, 0]
    refused = await limiter.check("tenant-a", rate_per_s=2.0, burst=3)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    # Another key keeps the configured bucket of one.
    assert (await limiter.check("tenant-b")).allowed
    assert not (await limiter.check("tenant-b")).allowed


@pytest.mark.anyio
async def test_counters_add_up_per_key_across_clients(make_limiter: MakeLimiter) -> None:
    first, second = await make_limiter(1.0, 1), await make_limiter(1.0, 1)
    await asyncio.gather(*(c.add("day:a:turns", 1, 3600) for c in [first, second] * 25))
    assert await first.add("day:a:turns", 0, 3600) == 50
    assert await second.add("day:a:tokens", 7, 3600) == 7
    assert await first.add("day:b:turns", 0, 3600) == 0


@pytest.mark.anyio
async def test_a_memory_counter_starts_again_after_its_ttl(clock: FakeClock) -> None:
    limiter = InMemoryRateLimiter(InMemoryRateLimiter.Config(), clock=clock)
    assert await limiter.add("day", 5, 60) == 5
    clock.now += 59
    assert await limiter.add("day", 1, 60) == 6  # the TTL runs from the first use
    clock.now += 1
    assert await limiter.add("day", 1, 60) == 1


@pytest.mark.integration
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
        await client.aclose()
    finally:
        await limiter.aclose()
