"""The session-listing part of the ``MemoryStore`` contract (``MemoryStoreContract``
inherits it): listing newest first, paging, titles and renames, and their scope."""

from __future__ import annotations

import pytest

from ragtide.components import MemoryStore
from ragtide.types import ChatTurn, SessionInfo

__all__ = ["SessionListContract"]


async def _ids(store: MemoryStore, namespace: str) -> list[str]:
    return [s.id for s in await store.list_sessions(namespace)]


class SessionListContract:
    """Needs a ``memory_store`` fixture yielding a started, empty ``MemoryStore``.

    Titles are at most ``SessionInfo.TITLE_MAX`` characters: a longer rename is cut.
    """

    @pytest.mark.anyio
    async def test_a_session_is_listed_with_its_first_question_as_title(
        self, memory_store: MemoryStore
    ) -> None:
        assert await memory_store.list_sessions("ns") == []
        await memory_store.append(
            "ns", "s1", ChatTurn.user("  How do\nreplicas   scale? "), ChatTurn.assistant("a")
        )
        await memory_store.append("ns", "s1", ChatTurn.user("And then?"))
        [info] = await memory_store.list_sessions("ns")
        assert (info.id, info.title, info.turns) == ("s1", "How do replicas scale?", 3)
        assert 0 < info.created_at <= info.updated_at

    @pytest.mark.anyio
    async def test_a_long_first_question_is_cut(self, memory_store: MemoryStore) -> None:
        question = "why " * 100
        await memory_store.append("ns", "s", ChatTurn.user(question))
        [info] = await memory_store.list_sessions("ns")
        assert info.title == SessionInfo.title_of(question)
        assert len(info.title) == SessionInfo.TITLE_MAX and info.title.endswith("…")

    @pytest.mark.anyio
    async def test_title_comes_from_the_first_user_turn(self, memory_store: MemoryStore) -> None:
        await memory_store.append("ns", "s", ChatTurn.assistant("Hello, ask me anything."))
        assert [s.title for s in await memory_store.list_sessions("ns")] == [""]
        await memory_store.append("ns", "s", ChatTurn.user("first"), ChatTurn.user("second"))
        await memory_store.append("ns", "s", ChatTurn.user("third"))
        assert [s.title for s in await memory_store.list_sessions("ns")] == ["first"]

    @pytest.mark.anyio
    async def test_latest_updated_first(self, memory_store: MemoryStore) -> None:
        for session in ("a", "b", "c"):
            await memory_store.append("ns", session, ChatTurn.user(f"q {session}"))
        assert await _ids(memory_store, "ns") == ["c", "b", "a"]
        await memory_store.append("ns", "a", ChatTurn.user("again"))
        listed = await memory_store.list_sessions("ns")
        assert [s.id for s in listed] == ["a", "c", "b"]
        times = [s.updated_at for s in listed]
        assert times == sorted(times, reverse=True)
        assert listed[0].created_at < listed[0].updated_at

    @pytest.mark.anyio
    async def test_pages_cover_every_session_once_in_order(self, memory_store: MemoryStore) -> None:
        for i in range(7):
            await memory_store.append("ns", f"s{i}", ChatTurn.user(f"q{i}"))
        everything = await memory_store.list_sessions("ns")
        seen: list[str] = []
        after: tuple[float, str] | None = None
        while page := await memory_store.list_sessions("ns", limit=3, after=after):
            assert len(page) <= 3
            seen += [s.id for s in page]
            after = (page[-1].updated_at, page[-1].id)
        assert seen == [s.id for s in everything] == [f"s{i}" for i in reversed(range(7))]
        assert await memory_store.list_sessions("ns", limit=0) == []

    @pytest.mark.anyio
    async def test_listing_is_scoped_to_the_namespace(self, memory_store: MemoryStore) -> None:
        await memory_store.append("t1/docs", "s", ChatTurn.user("t1 docs"))
        await memory_store.append("t2/docs", "s", ChatTurn.user("t2 docs"))
        await memory_store.append("t1/docs2", "other", ChatTurn.user("t1 docs2"))
        await memory_store.append("t1/doc", "x", ChatTurn.user("t1 doc"))
        assert [s.title for s in await memory_store.list_sessions("t1/docs")] == ["t1 docs"]
        assert [s.title for s in await memory_store.list_sessions("t2/docs")] == ["t2 docs"]
        assert await memory_store.list_sessions("t3/docs") == []

    @pytest.mark.anyio
    async def test_rename_is_kept_by_later_turns(self, memory_store: MemoryStore) -> None:
        await memory_store.append("ns", "s", ChatTurn.user("q"), ChatTurn.assistant("a"))
        renamed = await memory_store.rename("ns", "s", "Scaling notes")
        assert renamed is not None
        assert (renamed.id, renamed.title, renamed.turns) == ("s", "Scaling notes", 2)
        await memory_store.append("ns", "s", ChatTurn.user("another question"))
        [info] = await memory_store.list_sessions("ns")
        assert (info.title, info.turns) == ("Scaling notes", 3)
        assert info.created_at == renamed.created_at

    @pytest.mark.anyio
    async def test_a_long_rename_is_cut(self, memory_store: MemoryStore) -> None:
        await memory_store.append("ns", "s", ChatTurn.user("q"))
        renamed = await memory_store.rename("ns", "s", "é" * 500)
        assert renamed is not None and renamed.title == "é" * SessionInfo.TITLE_MAX
        assert [s.title for s in await memory_store.list_sessions("ns")] == [renamed.title]

    @pytest.mark.anyio
    async def test_rename_of_an_unknown_session(self, memory_store: MemoryStore) -> None:
        await memory_store.append("t1/docs", "s", ChatTurn.user("mine"))
        assert await memory_store.rename("t1/docs", "nobody", "x") is None
        assert await memory_store.rename("t2/docs", "s", "stolen") is None
        assert [s.title for s in await memory_store.list_sessions("t1/docs")] == ["mine"]
        assert await memory_store.list_sessions("t2/docs") == []
        assert await memory_store.load("t2/docs", "s") == []

    @pytest.mark.anyio
    async def test_deleted_sessions_leave_the_list(self, memory_store: MemoryStore) -> None:
        for session in ("a", "b"):
            await memory_store.append("ns", session, ChatTurn.user(session))
        await memory_store.append("kept", "a", ChatTurn.user("kept"))
        assert await memory_store.delete("ns", "a") is True
        assert await _ids(memory_store, "ns") == ["b"]
        assert await memory_store.rename("ns", "a", "x") is None
        assert await memory_store.delete_namespace("ns") == 1
        assert await memory_store.list_sessions("ns") == []
        assert await _ids(memory_store, "kept") == ["a"]
        # A namespace used again starts a fresh list; a session id used again, a fresh title.
        await memory_store.append("ns", "b", ChatTurn.user("new b"))
        assert [(s.id, s.title, s.turns) for s in await memory_store.list_sessions("ns")] == [
            ("b", "new b", 1)
        ]
