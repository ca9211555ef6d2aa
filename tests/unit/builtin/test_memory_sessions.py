"""The in-process session store's listing and titles against its bounds: expiry, the byte
budget and LRU order (the shared listing contract runs in tests/contract)."""

from __future__ import annotations

import pytest

from ragtide.builtin.memory import SESSION_OVERHEAD_BYTES, InMemoryMemoryStore, turn_bytes
from ragtide.types import ChatTurn, SessionInfo


def store(**config: int) -> InMemoryMemoryStore:
    return InMemoryMemoryStore(InMemoryMemoryStore.Config(**config))


@pytest.mark.anyio
async def test_expired_sessions_are_not_listed_and_their_bytes_go() -> None:
    now = [1000.0]
    memory = InMemoryMemoryStore(InMemoryMemoryStore.Config(ttl_seconds=60), clock=lambda: now[0])
    await memory.append("ns", "old", ChatTurn.user("old question"))
    now[0] += 50
    await memory.append("ns", "new", ChatTurn.user("new question"))
    now[0] += 20  # "old" idle for 70 s, "new" for 20 s
    assert [s.id for s in await memory.list_sessions("ns")] == ["new"]
    assert memory.used_bytes == SESSION_OVERHEAD_BYTES + len("ns") + len("new") + turn_bytes(
        ChatTurn.user("new question")
    )
    assert await memory.rename("ns", "old", "x") is None


@pytest.mark.anyio
async def test_titles_fit_in_the_session_overhead() -> None:
    memory = store()
    await memory.append("ns", "s", ChatTurn.user("é" * 500))
    before = memory.used_bytes
    renamed = await memory.rename("ns", "s", "ü" * 500)
    assert renamed is not None and len(renamed.title) == SessionInfo.TITLE_MAX
    assert memory.used_bytes == before
    assert SESSION_OVERHEAD_BYTES >= 4 * SessionInfo.TITLE_MAX


@pytest.mark.anyio
async def test_listing_is_not_a_use_but_renaming_is() -> None:
    text = "x" * 1000
    one = SESSION_OVERHEAD_BYTES + len("ns") + len("s0") + turn_bytes(ChatTurn.user(text))
    memory = store(max_bytes=3 * one + 10)
    for i in range(3):
        await memory.append("ns", f"s{i}", ChatTurn.user(text))
    await memory.list_sessions("ns")  # s0 stays the least recently used
    await memory.append("ns", "s3", ChatTurn.user(text))
    assert await memory.load("ns", "s0") == []
    await memory.rename("ns", "s1", "kept")  # s1 is used now: s2 goes next
    await memory.append("ns", "s4", ChatTurn.user(text))
    assert await memory.load("ns", "s2") == []
    assert [s.title for s in await memory.list_sessions("ns") if s.id == "s1"] == ["kept"]
