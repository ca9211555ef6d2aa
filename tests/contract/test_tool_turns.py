"""Tool turns (``ChatTurn.tool``) survive both session stores as written."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from ragtide.builtin.memory import InMemoryMemoryStore
from ragtide.builtin.redis_memory import RedisMemoryStore
from ragtide.components import MemoryStore
from ragtide.types import ChatTurn

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryStore]:
    if request.param == "memory":
        yield InMemoryMemoryStore(InMemoryMemoryStore.Config())
        return
    redis = RedisMemoryStore(RedisMemoryStore.Config(url=URL, key_prefix=f"t-{uuid.uuid4().hex}"))
    await redis.start()
    try:
        yield redis
    finally:
        await redis.delete("ns", "s")
        await redis.aclose()


@pytest.mark.anyio
async def test_a_tool_turn_round_trips(store: MemoryStore) -> None:
    call = json.dumps({"name": "calculator", "arguments": '{"expression": "6*7"}', "result": "42"})
    turns = (ChatTurn.user("How much?"), ChatTurn.tool(call), ChatTurn.assistant("42 [1]."))
    await store.append("ns", "s", *turns)
    loaded = await store.load("ns", "s", 10)
    assert [(t.role, t.content) for t in loaded] == [(t.role, t.content) for t in turns]
