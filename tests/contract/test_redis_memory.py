"""RedisMemoryStore against the real Redis on 127.0.0.1:6379 (each test under its own prefix)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ragtide.builtin.redis_memory import RedisMemoryStore, session_index_keys, session_key
from ragtide.errors import BackendUnavailable
from ragtide.testing import MemoryStoreContract
from ragtide.types import ChatTurn

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"
HANG_GUARD_S = 10  # fails a hung call; the expected failures take well under a second


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    client = Redis.from_url(URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(raw: Redis) -> AsyncIterator[str]:
    prefix = f"test-{uuid.uuid4().hex}"
    yield prefix
    keys = [key async for key in raw.scan_iter(match=f"{prefix}:*")]
    if keys:
        await raw.delete(*keys)


def config(prefix: str, **overrides: Any) -> RedisMemoryStore.Config:
    return RedisMemoryStore.Config(url=URL, key_prefix=prefix, **overrides)


MakeStore = Callable[..., Awaitable[RedisMemoryStore]]


@pytest.fixture
async def make_store(prefix: str) -> AsyncIterator[MakeStore]:
    stores: list[RedisMemoryStore] = []

    async def make(clock: Callable[[], float] | None = None, **overrides: Any) -> RedisMemoryStore:
        store = RedisMemoryStore(config(prefix, **overrides), clock=clock)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


class TestRedisMemoryStore(MemoryStoreContract):
    @pytest.fixture
    async def memory_store(self, prefix: str) -> AsyncIterator[RedisMemoryStore]:
        store = RedisMemoryStore(config(prefix))
        await store.start()
        yield store
        await store.aclose()


@pytest.mark.anyio
async def test_two_replicas_appending_at_once_lose_nothing(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()  # two clients, two connection pools
    await asyncio.gather(
        *(a.append("ns", "s", ChatTurn.user(f"a{i}")) for i in range(100)),
        *(b.append("ns", "s", ChatTurn.user(f"b{i}")) for i in range(100)),
    )
    contents = [t.content for t in await a.load("ns", "s", limit=500)]
    expected = [f"a{i}" for i in range(100)] + [f"b{i}" for i in range(100)]
    assert sorted(contents) == sorted(expected)  # 200 turns, each exactly once


@pytest.mark.anyio
async def test_ttl_is_set_and_refreshed_on_append(
    make_store: MakeStore, raw: Redis, prefix: str
) -> None:
    store = await make_store(ttl_seconds=1000)
    await store.append("ns", "s", ChatTurn.user("q"))
    key = session_key(prefix, "ns", "s")
    assert 0 < await raw.ttl(key) <= 1000
    await raw.expire(key, 5)
    await store.append("ns", "s", ChatTurn.assistant("a"))
    assert await raw.ttl(key) > 5


@pytest.mark.anyio
async def test_max_turns_trims_the_oldest(make_store: MakeStore, raw: Redis, prefix: str) -> None:
    store = await make_store(max_turns=3)
    for i in range(4):
        await store.append("ns", "s", ChatTurn.user(f"q{i}"))
    await store.append("ns", "s", ChatTurn.user("q4"), ChatTurn.assistant("a4"))
    assert await raw.llen(session_key(prefix, "ns", "s")) == 3
    assert [t.content for t in await store.load("ns", "s", limit=10)] == ["q3", "q4", "a4"]


@pytest.mark.anyio
async def test_turns_round_trip_as_compact_json(
    make_store: MakeStore, raw: Redis, prefix: str
) -> None:
    store = await make_store()
    turn = ChatTurn("assistant", 'Grüße, "quoted"\nnext line', at=1700000000.25)
    await store.append("ns", "s", turn)
    assert await store.load("ns", "s") == [turn]
    [stored] = await raw.lrange(session_key(prefix, "ns", "s"), 0, -1)
    expected = {"role": "assistant", "content": turn.content, "at": turn.at}
    assert stored == json.dumps(expected, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.anyio
async def test_unreadable_entries_are_skipped(
    make_store: MakeStore, raw: Redis, prefix: str
) -> None:
    store = await make_store()
    await raw.rpush(session_key(prefix, "ns", "s"), "not json", '{"role": "system"}')
    await store.append("ns", "s", ChatTurn.user("q"))
    assert [t.content for t in await store.load("ns", "s")] == ["q"]


@pytest.mark.anyio
async def test_zero_or_negative_limit_loads_nothing(make_store: MakeStore) -> None:
    store = await make_store()
    await store.append("ns", "s", ChatTurn.user("q"))
    assert await store.load("ns", "s", limit=0) == []
    assert await store.load("ns", "s", limit=-1) == []


@pytest.mark.anyio
async def test_ping_reaches_redis(make_store: MakeStore, raw: Redis) -> None:
    # ping must ask the server (readiness depends on it), not answer from local state:
    # Redis counts the PINGs it served.
    async def pings() -> int:
        stats = await raw.info("commandstats")
        return int(stats.get("cmdstat_ping", {}).get("calls", 0))

    store = await make_store()
    before = await pings()
    assert await store.ping() is None
    await store.ping()
    assert await pings() >= before + 2


def test_keys_are_unambiguous() -> None:
    assert session_key("p", "a:b", "c") != session_key("p", "a", "b:c")
    assert session_key("p", "a%3Ab", "c") != session_key("p", "a:b", "c")
    assert session_key("p", "docs", "s-1") == "p:s:docs:s-1"


@pytest.mark.anyio
async def test_use_before_start_is_a_clear_error() -> None:
    store = RedisMemoryStore(config("unused"))
    with pytest.raises(RuntimeError, match="start"):
        await store.load("ns", "s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.anyio
async def test_closed_port_raises_backend_unavailable() -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    store = RedisMemoryStore(RedisMemoryStore.Config(url=url, retry_after_s=7))
    await store.start()
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            lambda: store.load("ns", "s"),
            lambda: store.append("ns", "s", ChatTurn.user("q")),
        ]
        for call in calls:
            with anyio.fail_after(HANG_GUARD_S), pytest.raises(BackendUnavailable) as info:
                await call()
            assert isinstance(info.value.__cause__, RedisConnectionError)
            assert info.value.retry_after == 7
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_unresponsive_server_times_out_as_backend_unavailable(silent_server: int) -> None:
    url = f"redis://127.0.0.1:{silent_server}/0"
    store = RedisMemoryStore(RedisMemoryStore.Config(url=url, socket_timeout_s=0.2))
    await store.start()
    try:
        with anyio.fail_after(HANG_GUARD_S), pytest.raises(BackendUnavailable) as info:
            await store.load("ns", "s")
        assert isinstance(info.value.__cause__, RedisTimeoutError | RedisConnectionError)
    finally:
        await store.aclose()


# --- the session index -----------------------------------------------------------------


@pytest.mark.anyio
async def test_delete_namespace_removes_the_session_index(
    make_store: MakeStore, raw: Redis, prefix: str
) -> None:
    store = await make_store()
    await store.append("t1/docs", "s", ChatTurn.user("q"))
    await store.rename("t1/docs", "s", "named")
    await store.append("t1/docs2", "s", ChatTurn.user("other"))
    index, titles = session_index_keys(prefix, "t1/docs")
    assert await raw.exists(index, titles) == 2
    assert await store.delete_namespace("t1/docs") == 1
    assert await raw.exists(index, titles) == 0
    assert await raw.exists(*session_index_keys(prefix, "t1/docs2")) == 2


@pytest.mark.anyio
async def test_index_and_titles_expire_with_the_sessions(
    make_store: MakeStore, raw: Redis, prefix: str
) -> None:
    store = await make_store(ttl_seconds=1000)
    await store.append("ns", "s", ChatTurn.user("q"))
    for key in session_index_keys(prefix, "ns"):
        assert 0 < await raw.ttl(key) <= 1000


@pytest.mark.anyio
async def test_sessions_idle_past_the_ttl_leave_the_index_on_append(
    make_store: MakeStore, raw: Redis, prefix: str
) -> None:
    now = [1_000_000.0]  # the index's clock (the lists expire by Redis's own)
    store = await make_store(ttl_seconds=100, clock=lambda: now[0])
    await store.append("ns", "old", ChatTurn.user("old"))
    now[0] += 101
    await store.append("ns", "new", ChatTurn.user("new"))
    index, titles = session_index_keys(prefix, "ns")
    assert await raw.zrange(index, 0, -1) == ["new"]
    assert sorted(await raw.hkeys(titles)) == ["c:new", "t:new"]


@pytest.mark.anyio
async def test_listing_forgets_sessions_whose_list_is_gone(
    make_store: MakeStore, raw: Redis, prefix: str
) -> None:
    store = await make_store()
    await store.append("ns", "a", ChatTurn.user("a"))
    await store.append("ns", "b", ChatTurn.user("b"))
    await raw.delete(session_key(prefix, "ns", "a"))  # as when it expires
    assert [s.id for s in await store.list_sessions("ns")] == ["b"]
    index, titles = session_index_keys(prefix, "ns")
    assert await raw.zrange(index, 0, -1) == ["b"]
    assert "t:a" not in await raw.hkeys(titles)


@pytest.mark.anyio
async def test_pages_through_sessions_updated_at_the_same_instant(make_store: MakeStore) -> None:
    store = await make_store(clock=lambda: 1_700_000_000.5)
    for i in range(5):
        await store.append("ns", f"s{i}", ChatTurn.user(f"q{i}"))
    seen: list[str] = []
    after: tuple[float, str] | None = None
    while page := await store.list_sessions("ns", limit=2, after=after):
        seen += [s.id for s in page]
        after = (page[-1].updated_at, page[-1].id)
    assert seen == ["s4", "s3", "s2", "s1", "s0"]  # ties: greater id first
    assert {s.updated_at for s in await store.list_sessions("ns")} == {1_700_000_000.5}


@pytest.mark.anyio
async def test_two_replicas_see_one_list_in_one_order(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    await a.append("ns", "s1", ChatTurn.user("first"))
    await b.append("ns", "s2", ChatTurn.user("second"))
    await a.append("ns", "s1", ChatTurn.user("more"))
    await b.rename("ns", "s2", "renamed on b")
    assert [(s.id, s.title) for s in await a.list_sessions("ns")] == [
        ("s1", "first"),
        ("s2", "renamed on b"),
    ]
    assert await a.list_sessions("ns") == await b.list_sessions("ns")
