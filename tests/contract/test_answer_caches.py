"""Answer caches: key normalisation (pure), and one behaviour suite run against both caches.

The Redis half of the suite is marked ``integration`` and uses the real Redis on
127.0.0.1:6379 under a unique key prefix that is removed afterwards.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from ragtide.builtin.redis_cache import (
    ENTRY_OVERHEAD_BYTES,
    AnswerCache,
    InMemoryAnswerCache,
    RedisAnswerCache,
    cache_key,
    lookup,
    normalise_query,
)
from ragtide.errors import BackendUnavailable

URL = "redis://127.0.0.1:6379/0"
FP = "model=x;prompt=v1"

# --- keys (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    ["What is RAG?", "  what   is\trag ", "WHAT IS RAG", "¿What is RAG?!", "what is rag\n..."],
)
def test_same_question_in_other_spacing_case_or_end_punctuation_has_one_key(variant: str) -> None:
    assert normalise_query(variant) == "what is rag"
    assert cache_key(3, variant, FP) == cache_key(3, "what is rag", FP)


def test_inner_punctuation_and_words_still_count() -> None:
    assert cache_key(0, "what is rag", FP) != cache_key(0, "what is a rag", FP)
    assert cache_key(0, "e.g. rag", FP) != cache_key(0, "eg rag", FP)


def test_generation_and_fingerprint_change_the_key() -> None:
    key = cache_key(1, "q", FP)
    assert key != cache_key(2, "q", FP)
    assert key != cache_key(1, "q", "model=y;prompt=v1")
    assert key == cache_key("1", "q", FP)  # the generation may come as text or int
    assert len(key) == 64 and int(key, 16) >= 0


def test_parts_cannot_run_into_each_other() -> None:
    assert cache_key(1, "2 q", FP) != cache_key(12, "q", FP)
    assert cache_key(1, "q", "x") != cache_key(1, "", "qx")


@given(st.lists(st.text(alphabet="abcxyz", min_size=1), min_size=1, max_size=6))
def test_whitespace_never_matters(words: list[str]) -> None:
    assert cache_key(0, " ".join(words), FP) == cache_key(0, "\n " + "  \t ".join(words) + "? ", FP)


# --- behaviour suite: both caches ---------------------------------------------------------


@asynccontextmanager
async def scratch_prefix() -> AsyncIterator[str]:
    """A unique key prefix whose keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        client = Redis.from_url(URL, decode_responses=True)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    client = Redis.from_url(URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with scratch_prefix() as prefix:
        yield prefix


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[AnswerCache]:
    if request.param == "memory":
        yield InMemoryAnswerCache(InMemoryAnswerCache.Config())
        return
    async with scratch_prefix() as prefix:
        redis_cache = RedisAnswerCache(RedisAnswerCache.Config(url=URL, key_prefix=prefix))
        await redis_cache.start()
        yield redis_cache
        await redis_cache.aclose()


@pytest.mark.anyio
async def test_is_an_answer_cache(cache: AnswerCache) -> None:
    assert isinstance(cache, AnswerCache)


@pytest.mark.anyio
async def test_miss_then_put_then_hit(cache: AnswerCache) -> None:
    value = {"text": "Paris", "citations": [{"index": 1, "document_id": "d"}], "score": 0.5}
    key, hit = await lookup(cache, "ns", "Capital of France?", FP)
    assert hit is None
    await cache.put("ns", key, value)
    assert await lookup(cache, "ns", "capital of  france", FP) == (key, value)


@pytest.mark.anyio
async def test_hits_are_copies(cache: AnswerCache) -> None:
    value = {"items": [1, 2]}
    await cache.put("ns", "k", value)
    value["items"].append(3)
    hit = await cache.get("ns", "k")
    assert hit == {"items": [1, 2]}
    assert hit is not None
    hit["items"].append(4)
    assert await cache.get("ns", "k") == {"items": [1, 2]}


@pytest.mark.anyio
async def test_namespaces_are_isolated(cache: AnswerCache) -> None:
    await cache.put("a", "k", {"text": "secret of a"})
    assert await cache.get("b", "k") is None


@pytest.mark.anyio
async def test_invalidate_makes_old_entries_unreachable(cache: AnswerCache) -> None:
    key, _ = await lookup(cache, "ns", "q", FP)
    await cache.put("ns", key, {"text": "old"})
    await cache.put("other", key, {"text": "kept"})
    before = await cache.generation("ns")
    assert await cache.invalidate("ns") == before + 1
    assert await cache.generation("ns") == before + 1
    new_key, hit = await lookup(cache, "ns", "q", FP)
    assert hit is None and new_key != key
    assert await cache.get("other", key) == {"text": "kept"}  # other namespaces untouched


@pytest.mark.anyio
async def test_answer_computed_across_an_invalidation_is_never_served(cache: AnswerCache) -> None:
    key, _ = await lookup(cache, "ns", "q", FP)  # generation read before answering
    await cache.invalidate("ns")  # documents change while the answer is computed
    await cache.put("ns", key, {"text": "stale"})
    assert (await lookup(cache, "ns", "q", FP))[1] is None


# --- implementation specifics -------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_memory_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = InMemoryAnswerCache(InMemoryAnswerCache.Config(ttl_seconds=60), clock=clock)
    await cache.put("ns", "k", {"v": 1})
    clock.now += 59.9
    assert await cache.get("ns", "k") == {"v": 1}
    clock.now += 0.1
    assert await cache.get("ns", "k") is None


@pytest.mark.anyio
async def test_memory_cache_is_a_bounded_lru() -> None:
    cache = InMemoryAnswerCache(InMemoryAnswerCache.Config(max_entries=2))
    await cache.put("ns", "a", {"v": "a"})
    await cache.put("ns", "b", {"v": "b"})
    assert await cache.get("ns", "a") is not None  # a is now the most recent
    await cache.put("ns", "c", {"v": "c"})
    assert await cache.get("ns", "b") is None
    assert await cache.get("ns", "a") == {"v": "a"}
    assert await cache.get("ns", "c") == {"v": "c"}


def _evictions(reason: str) -> float:
    labels = {"store": "answer_cache", "reason": reason}
    return REGISTRY.get_sample_value("ragtide_budget_evictions_total", labels) or 0.0


def _entry_bytes(key: str, value: dict[str, str]) -> int:
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(raw.encode()) + len("ns") + len(key) + ENTRY_OVERHEAD_BYTES


def test_memory_cache_default_budget_is_32_mib() -> None:
    assert InMemoryAnswerCache.Config().max_bytes == 32 * 1024 * 1024


@pytest.mark.anyio
async def test_memory_cache_accounts_utf8_bytes() -> None:
    cache = InMemoryAnswerCache(InMemoryAnswerCache.Config())
    await cache.put("ns", "k", {"t": "é" * 10})
    assert cache.used_bytes == _entry_bytes("k", {"t": "é" * 10})
    assert cache.used_bytes == _entry_bytes("k", {"t": "e" * 20})
    await cache.put("ns", "k", {"t": "short"})  # replaced, not added
    assert cache.used_bytes == _entry_bytes("k", {"t": "short"})


@pytest.mark.anyio
async def test_memory_cache_evicts_least_recently_used_by_bytes() -> None:
    value = {"t": "x" * 1000}
    one = _entry_bytes("a", value)
    cache = InMemoryAnswerCache(InMemoryAnswerCache.Config(max_bytes=3 * one + 10))
    before = _evictions("bytes")
    for key in "abc":
        await cache.put("ns", key, value)
    assert await cache.get("ns", "a") == value  # a is now more recent than b
    await cache.put("ns", "d", value)
    assert _evictions("bytes") == before + 1
    assert await cache.get("ns", "b") is None
    for key in "acd":
        assert await cache.get("ns", key) == value, key
    assert cache.used_bytes <= 3 * one + 10


@pytest.mark.anyio
async def test_memory_cache_one_large_answer_pushes_out_many_small_ones() -> None:
    big = {"t": "x" * 5000}
    cache = InMemoryAnswerCache(InMemoryAnswerCache.Config(max_bytes=_entry_bytes("big", big)))
    for i in range(5):
        await cache.put("ns", f"k{i}", {"t": "hi"})
    await cache.put("ns", "big", big)
    assert [await cache.get("ns", f"k{i}") for i in range(5)] == [None] * 5
    assert await cache.get("ns", "big") == big


@pytest.mark.anyio
async def test_memory_cache_skips_an_answer_larger_than_the_budget() -> None:
    cache = InMemoryAnswerCache(InMemoryAnswerCache.Config(max_bytes=2000))
    await cache.put("ns", "small", {"t": "ok"})
    before = _evictions("too_large")
    await cache.put("ns", "huge", {"t": "x" * 5000})
    assert _evictions("too_large") == before + 1
    assert await cache.get("ns", "huge") is None
    assert await cache.get("ns", "small") == {"t": "ok"}  # nothing else was thrown out


@pytest.mark.anyio
async def test_memory_cache_count_evictions_and_expiry_release_bytes() -> None:
    clock = FakeClock()
    config = InMemoryAnswerCache.Config(max_entries=1, ttl_seconds=10)
    cache = InMemoryAnswerCache(config, clock=clock)
    before = _evictions("entries")
    await cache.put("ns", "a", {"v": "a"})
    await cache.put("ns", "b", {"v": "b"})
    assert _evictions("entries") == before + 1
    assert cache.used_bytes == _entry_bytes("b", {"v": "b"})
    clock.now += 10
    assert await cache.get("ns", "b") is None
    assert cache.used_bytes == 0
    gauge = REGISTRY.get_sample_value("ragtide_budget_bytes", {"store": "answer_cache"})
    assert gauge is not None and gauge >= 0


@pytest.mark.anyio
async def test_disabled_memory_cache_always_misses() -> None:
    cache = InMemoryAnswerCache(InMemoryAnswerCache.Config(enabled=False))
    await cache.put("ns", "k", {"v": 1})
    assert await cache.get("ns", "k") is None


@pytest.mark.integration
@pytest.mark.anyio
async def test_redis_entries_carry_the_ttl(raw: Redis, prefix: str) -> None:
    cache = RedisAnswerCache(RedisAnswerCache.Config(url=URL, key_prefix=prefix, ttl_seconds=120))
    await cache.start()
    await cache.put("ns", "k", {"v": 1})
    await cache.invalidate("ns")
    await cache.aclose()
    entries = [key async for key in raw.scan_iter(match=f"{prefix}:c:*")]
    assert len(entries) == 1
    assert 0 < await raw.ttl(entries[0]) <= 120
    assert await raw.ttl(f"{prefix}:v:ns") == -1  # generations never expire, never repeat


@pytest.mark.anyio
async def test_disabled_redis_cache_never_connects() -> None:
    config = RedisAnswerCache.Config(url="redis://127.0.0.1:1/0", enabled=False)
    cache = RedisAnswerCache(config)
    await cache.start()
    await cache.ping()
    await cache.put("ns", "k", {"v": 1})
    assert await cache.get("ns", "k") is None
    assert await cache.generation("ns") == 0
    await cache.aclose()


@pytest.mark.anyio
async def test_redis_down_is_backend_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache = RedisAnswerCache(RedisAnswerCache.Config(url=f"redis://127.0.0.1:{port}/0"))
    await cache.start()
    try:
        with anyio.fail_after(10), pytest.raises(BackendUnavailable):  # fail_after: hang guard
            await cache.get("ns", "k")
    finally:
        await cache.aclose()
