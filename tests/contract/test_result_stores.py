"""Result stores: one behaviour suite, run on the in-memory store and on the real Redis.

The Redis half is marked ``integration`` and uses 127.0.0.1:6379 under a unique key
prefix that is removed afterwards.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.asyncio import Redis

from ragtide.builtin.task_results import InMemoryResultStore, RedisResultStore, task_key
from ragtide.components import ResultStore
from ragtide.errors import BackendUnavailable

pytestmark = pytest.mark.anyio

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex}"
    yield prefix
    with redis.Redis.from_url(URL, decode_responses=True) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ResultStore]:
    if request.param == "memory":
        yield InMemoryResultStore()
        return
    redis_prefix = request.getfixturevalue("redis_prefix")
    redis_store = RedisResultStore(RedisResultStore.Config(url=URL, key_prefix=redis_prefix))
    await redis_store.start()
    yield redis_store
    await redis_store.aclose()


def record(status: str = "queued", **extra: object) -> dict[str, object]:
    return {"task_id": "t1", "status": status, "result": None, "score": 0.5, **extra}


async def test_implements_the_protocol(store: ResultStore) -> None:
    assert isinstance(store, ResultStore)
    await store.ping()


async def test_create_stores_only_the_first_record(store: ResultStore) -> None:
    assert await store.get("kb", "t1") is None
    assert await store.create("kb", "t1", record()) is True
    assert await store.create("kb", "t1", record("running")) is False
    assert await store.get("kb", "t1") == record()


async def test_put_replaces_and_delete_removes(store: ResultStore) -> None:
    await store.put("kb", "t1", record())
    await store.put("kb", "t1", record("done", result={"answer": "ü [1]", "n": [1, 2.5]}))
    assert await store.get("kb", "t1") == record("done", result={"answer": "ü [1]", "n": [1, 2.5]})
    assert await store.delete("kb", "t1") is True
    assert await store.delete("kb", "t1") is False
    assert await store.get("kb", "t1") is None
    assert await store.create("kb", "t1", record()) is True  # free again


async def test_namespaces_are_separate(store: ResultStore) -> None:
    await store.put("a", "t1", record("done"))
    assert await store.get("b", "t1") is None
    assert await store.create("b", "t1", record()) is True
    assert (await store.get("a", "t1") or {})["status"] == "done"


async def test_ids_with_separators_do_not_collide(store: ResultStore) -> None:
    await store.put("a:b", "c", record("done"))
    assert await store.get("a", "b:c") is None


async def test_the_in_memory_store_expires_records() -> None:
    store = InMemoryResultStore(InMemoryResultStore.Config(ttl_seconds=1e-9))
    await store.put("kb", "t1", record())
    assert await store.get("kb", "t1") is None
    assert await store.create("kb", "t1", record()) is True


@pytest.mark.integration
async def test_redis_records_expire_and_writes_restart_the_clock(redis_prefix: str) -> None:
    store = RedisResultStore(
        RedisResultStore.Config(url=URL, key_prefix=redis_prefix, ttl_seconds=1000)
    )
    await store.start()
    raw = Redis.from_url(URL, decode_responses=True)
    try:
        key = task_key(redis_prefix, "kb", "t1")
        await store.create("kb", "t1", record())
        assert 0 < await raw.ttl(key) <= 1000
        await raw.expire(key, 5)
        await store.put("kb", "t1", record("done"))
        assert await raw.ttl(key) > 5
        await raw.set(key, "not json")
        assert await store.get("kb", "t1") is None  # unreadable: treated as absent
    finally:
        await raw.aclose()
        await store.aclose()


@pytest.mark.integration
async def test_redis_down_is_backend_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    store = RedisResultStore(RedisResultStore.Config(url=f"redis://127.0.0.1:{port}/0", retries=0))
    await store.start()
    try:
        for call in (store.ping(), store.get("kb", "t"), store.create("kb", "t", record())):
            with pytest.raises(BackendUnavailable):
                await call
    finally:
        await store.aclose()
