from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ragtide.builtin.memory import InMemoryMemoryStore
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing import DocumentStoreContract, MemoryStoreContract


class TestSQLiteStore(DocumentStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
        await store.start()
        yield store
        await store.aclose()


class TestInMemoryMemoryStore(MemoryStoreContract):
    @pytest.fixture
    def memory_store(self) -> InMemoryMemoryStore:
        return InMemoryMemoryStore(InMemoryMemoryStore.Config())
