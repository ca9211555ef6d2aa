"""One behaviour suite for every ``RateLimiter``, driven by a fake clock (no sleeps).

``tests/unit/builtin/test_ratelimit.py`` runs it on ``InMemoryRateLimiter`` and
``tests/contract/test_redis_ratelimit.py`` on ``RedisRateLimiter`` against the real Redis
(the fake clock is passed into the Lua script). A subclass provides ``make_limiter``:
limiters built by one test share state (for Redis: one key prefix, a client each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ragtide.builtin.ratelimit import Decision, RateLimiter, rate_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


MakeLimiter = Callable[[float, int], Awaitable[RateLimiter]]


class RateLimiterContract:
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.mark.anyio
    async def test_is_a_rate_limiter(self, make_limiter: MakeLimiter) -> None:
        assert isinstance(await make_limiter(1, 1), RateLimiter)

    @pytest.mark.anyio
    async def test_burst_is_admitted_then_refused_with_retry_after(
        self, make_limiter: MakeLimiter
    ) -> None:
        limiter = await make_limiter(2.0, 5)
        decisions = [await limiter.check("k") for _ in range(5)]
        assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
        assert all(d.allowed and d.retry_after == 0 for d in decisions)
        refused = await limiter.check("k")
        assert (refused.allowed, refused.remaining) == (False, 0)
        assert refused.retry_after == pytest.approx(0.5)  # one token at 2 per second

    @pytest.mark.anyio
    async def test_tokens_refill_with_time(
        self, make_limiter: MakeLimiter, clock: FakeClock
    ) -> None:
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
    async def test_refill_is_capped_at_burst(
        self, make_limiter: MakeLimiter, clock: FakeClock
    ) -> None:
        limiter = await make_limiter(10.0, 4)
        await limiter.check("k")
        clock.now += 3600
        assert (await limiter.check("k")).remaining == 3

    @pytest.mark.anyio
    async def test_cost_takes_several_tokens(self, make_limiter: MakeLimiter) -> None:
        limiter = await make_limiter(1.0, 10)
        assert await limiter.check("k", cost=4) == Decision(True, 6, 0.0)
        refused = await limiter.check("k", cost=7)
        assert not refused.allowed and refused.remaining == 6
        assert refused.retry_after == pytest.approx(1.0)
        assert (await limiter.check("k", cost=6)).allowed  # a refusal takes nothing

    @pytest.mark.anyio
    async def test_cost_outside_one_to_burst_is_a_usage_error(
        self, make_limiter: MakeLimiter
    ) -> None:
        limiter = await make_limiter(1.0, 3)
        for cost in (0, -1, 4):
            with pytest.raises(ValueError, match="cost"):
                await limiter.check("k", cost=cost)

    @pytest.mark.anyio
    async def test_keys_have_separate_buckets(self, make_limiter: MakeLimiter) -> None:
        limiter = await make_limiter(1.0, 1)
        assert (await limiter.check(rate_key("ns", "client-a"))).allowed
        assert not (await limiter.check(rate_key("ns", "client-a"))).allowed
        assert (await limiter.check(rate_key("ns", "client-b"))).allowed
        assert (await limiter.check(rate_key("other", "client-a"))).allowed

    @pytest.mark.anyio
    async def test_a_key_may_carry_its_own_rate_and_burst(self, make_limiter: MakeLimiter) -> None:
        limiter = await make_limiter(1.0, 1)
        own = [await limiter.check("tenant-a", rate_per_s=2.0, burst=3) for _ in range(3)]
        assert all(d.allowed for d in own) and [d.remaining for d in own] == [2, 1, 0]
        refused = await limiter.check("tenant-a", rate_per_s=2.0, burst=3)
        assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
        # Another key keeps the configured bucket of one.
        assert (await limiter.check("tenant-b")).allowed
        assert not (await limiter.check("tenant-b")).allowed

    @pytest.mark.anyio
    async def test_counters_add_up_per_key(self, make_limiter: MakeLimiter) -> None:
        first, second = await make_limiter(1.0, 1), await make_limiter(1.0, 1)
        await asyncio.gather(*(c.add("day:a:turns", 1, 3600) for c in [first, second] * 25))
        assert await first.add("day:a:turns", 0, 3600) == 50
        assert await second.add("day:a:tokens", 7, 3600) == 7
        assert await first.add("day:b:turns", 0, 3600) == 0
