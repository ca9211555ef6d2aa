"""InMemoryRateLimiter through the shared behaviour suite (tests/ratelimit_contract.py), and
what needs no Redis server: key hashing, eviction, TTLs, the Redis limiter's refusals
when it is not started or Redis is down. RedisRateLimiter against the real Redis is in
tests/contract/test_redis_ratelimit.py (tests/unit holds fakes only).
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from ragtide.builtin.ratelimit import InMemoryRateLimiter, RateLimiter, RedisRateLimiter, rate_key
from ragtide.errors import BackendUnavailable
from tests.ratelimit_contract import FakeClock, MakeLimiter, RateLimiterContract


class TestInMemoryRateLimiter(RateLimiterContract):
    @pytest.fixture
    async def make_limiter(self, clock: FakeClock) -> AsyncIterator[MakeLimiter]:
        """One limiter per (rate, burst): within one process, clients share the object."""
        made: dict[tuple[float, int], InMemoryRateLimiter] = {}

        async def make(rate_per_s: float, burst: int) -> RateLimiter:
            config = InMemoryRateLimiter.Config(rate_per_s=rate_per_s, burst=burst)
            return made.setdefault((rate_per_s, burst), InMemoryRateLimiter(config, clock=clock))

        yield make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.mark.anyio
async def test_memory_limiters_are_per_process_and_share_nothing(clock: FakeClock) -> None:
    # What "one process" means: two instances (two replicas) each admit a whole burst.
    # Sharing a bucket across clients is the Redis limiter's job (its contract test).
    config = InMemoryRateLimiter.Config(rate_per_s=1.0, burst=2)
    a, b = InMemoryRateLimiter(config, clock=clock), InMemoryRateLimiter(config, clock=clock)
    assert [(await a.check("hot")).allowed for _ in range(3)] == [True, True, False]
    assert [(await b.check("hot")).allowed for _ in range(3)] == [True, True, False]


@pytest.mark.anyio
async def test_memory_limiter_defaults_and_fractional_refill(clock: FakeClock) -> None:
    limiter = InMemoryRateLimiter(InMemoryRateLimiter.Config(), clock=clock)  # 5/s, 20
    decisions = [await limiter.check("k") for _ in range(21)]
    assert [d.allowed for d in decisions] == [True] * 20 + [False]
    assert decisions[-1].retry_after == pytest.approx(0.2)
    clock.now += 0.1  # half a token: refused, remaining rounds down to 0
    refused = await limiter.check("k")
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after == pytest.approx(0.1)
    clock.now -= 1.0  # a clock that steps back refills nothing and takes nothing
    assert (await limiter.check("k")).retry_after == pytest.approx(0.1)


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


@pytest.mark.anyio
async def test_a_memory_counter_starts_again_after_its_ttl(clock: FakeClock) -> None:
    limiter = InMemoryRateLimiter(InMemoryRateLimiter.Config(), clock=clock)
    assert await limiter.add("day", 5, 60) == 5
    clock.now += 59
    assert await limiter.add("day", 1, 60) == 6  # the TTL runs from the first use
    clock.now += 1
    assert await limiter.add("day", 1, 60) == 1


# --- edges the mutants found (mutation/reports/ratelimit.md) ---------------------------------


def test_rate_key_is_the_namespace_and_32_hex_digits() -> None:
    namespace, digest = rate_key("docs", "client").split(":")
    assert namespace == "docs" and len(digest) == 32 and int(digest, 16) >= 0


@pytest.mark.anyio
async def test_a_memory_counter_restarted_after_its_ttl_counts_again(clock: FakeClock) -> None:
    limiter = InMemoryRateLimiter(InMemoryRateLimiter.Config(), clock=clock)
    await limiter.add("day", 5, 60)
    clock.now += 60
    assert await limiter.add("day", 1, 60) == 1  # a new window from now ...
    clock.now += 30
    assert await limiter.add("day", 1, 60) == 2  # ... that lasts its TTL


@pytest.mark.anyio
async def test_memory_counters_keep_the_most_recent_max_keys(clock: FakeClock) -> None:
    limiter = InMemoryRateLimiter(InMemoryRateLimiter.Config(max_keys=2), clock=clock)
    for key in ("a", "b", "c"):
        assert await limiter.add(key, 1, 60) == 1
    assert await limiter.add("c", 1, 60) == 2  # the newest two are kept ...
    assert await limiter.add("b", 1, 60) == 2
    assert await limiter.add("a", 1, 60) == 1  # ... the oldest was evicted


START = r"^RedisRateLimiter\.start\(\) must be awaited before use$"


@pytest.mark.anyio
async def test_redis_limiter_unstarted_or_closed_says_so() -> None:
    limiter = RedisRateLimiter(RedisRateLimiter.Config())
    with pytest.raises(RuntimeError, match=START):
        await limiter.check("k")
    with pytest.raises(RuntimeError, match=START):
        await limiter.add("k", 1, 60)
    await limiter.start()  # connects lazily: no server needed
    await limiter.aclose()
    with pytest.raises(RuntimeError, match=START):
        await limiter.check("k")
    with pytest.raises(RuntimeError, match=START):
        await limiter.add("k", 1, 60)


@pytest.mark.anyio
async def test_redis_down_names_the_operation_and_its_retry_after() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = RedisRateLimiter.Config(url=f"redis://127.0.0.1:{port}/0", retry_after_s=7)
    limiter = RedisRateLimiter(config)
    await limiter.start()
    try:
        with anyio.fail_after(10), pytest.raises(BackendUnavailable) as check:
            await limiter.check("k")
        with anyio.fail_after(10), pytest.raises(BackendUnavailable) as add:
            await limiter.add("k", 1, 60)
    finally:
        await limiter.aclose()
    failed = r"^redis {} (failed|was refused): \w+$"
    assert re.match(failed.format("rate limit check"), check.value.message), check.value.message
    assert re.match(failed.format("quota count"), add.value.message), add.value.message
    assert check.value.retry_after == add.value.retry_after == 7
