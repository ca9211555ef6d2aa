"""TenantStoreContract on both built-in stores (tenants and keys live with the documents)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ragtide.builtin.postgres_store import PostgresStore
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing import TenantStoreContract
from tests.contract.test_postgres_store import MakeStore, make_store

__all__ = ["make_store"]  # the fixture, re-exported for pytest


class TestSQLiteTenantStore(TenantStoreContract):
    @pytest.fixture
    async def tenant_store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
        await store.start()
        yield store
        await store.aclose()


@pytest.mark.integration
class TestPostgresTenantStore(TenantStoreContract):
    @pytest.fixture
    async def tenant_store(self, make_store: MakeStore) -> PostgresStore:
        return await make_store()
