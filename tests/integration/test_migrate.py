"""``ragtide migrate``: the store's schema brought up to date by a one-off command (a Job
before a rollout), with its own deadline, so that a migration rewriting every row does not
have to fit in a starting replica's. A failure is a message and exit code 1, and the
schema is left as it was."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from ragtide import cli
from ragtide.builtin.postgres_store import SCHEMA_VERSION, PostgresStore, _lock_key
from ragtide.testing.fakes import make_chunks, make_document
from tests.contract.pg_versions import write_schema_at
from tests.contract.test_postgres_store import URL

pytestmark = pytest.mark.integration


@pytest.fixture
def schemas(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    names: list[str] = []
    monkeypatch.setenv("RAGTIDE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGTIDE_STORE__USE", "postgres")
    monkeypatch.setenv("RAGTIDE_STORE__CONFIG__URL", URL)
    monkeypatch.setenv("RAGTIDE_LOGGING__LEVEL", "WARNING")
    yield names
    with psycopg.connect(URL, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _version(schema: str) -> int:
    with psycopg.connect(URL, autocommit=True) as conn:
        row = conn.execute(f"SELECT max(version) FROM {schema}.schema_version").fetchone()
    assert row is not None
    return int(row[0])


def _chunks(schema: str) -> int:
    with psycopg.connect(URL, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.chunks").fetchone()
    assert row is not None
    return int(row[0])


async def _current_with_rows(schema: str) -> None:
    store = PostgresStore(PostgresStore.Config(url=URL, db_schema=schema))
    await store.start()
    try:
        chunks = make_chunks("d", ["herons wade", "storks nest", "egrets fish"])
        vectors = np.eye(3, 8, dtype=np.float32)
        await store.put_document("t/ns", make_document("d"), chunks, vectors, "e")
    finally:
        await store.aclose()


def test_an_older_schema_is_migrated_and_keeps_its_rows(
    schemas: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"test_{uuid.uuid4().hex[:16]}", f"test_{uuid.uuid4().hex[:16]}"
    schemas += [source, target]
    asyncio.run(_current_with_rows(source))
    asyncio.run(write_schema_at(5, source, target))  # as a store before partitioning left it
    assert _version(target) == 5
    monkeypatch.setenv("RAGTIDE_STORE__CONFIG__DB_SCHEMA", target)

    assert cli.main(["migrate"]) == 0
    assert "schema is up to date" in capsys.readouterr().out
    assert _version(target) == SCHEMA_VERSION
    assert _chunks(target) == 3
    assert cli.main(["migrate", "--timeout-s", "5"]) == 0  # nothing left to do


def test_a_migration_past_its_deadline_fails_cleanly_and_changes_nothing(
    schemas: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"test_{uuid.uuid4().hex[:16]}"
    schemas.append(target)
    monkeypatch.setenv("RAGTIDE_STORE__CONFIG__DB_SCHEMA", target)
    # Another replica is migrating (it holds the migration lock): this one waits, and its
    # one-second deadline ends the wait.
    with psycopg.connect(URL, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_lock_key("migrate"),))
        code = cli.main(["migrate", "--timeout-s", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ragtide: ") and "Traceback" not in err
    with psycopg.connect(URL, autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (target,)
        ).fetchall()
    assert found == []  # nothing was created


def test_the_embedded_store_is_brought_up_to_date_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGTIDE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGTIDE_LOGGING__LEVEL", "WARNING")
    assert cli.main(["migrate"]) == 0
    assert "the sqlite store's schema is up to date" in capsys.readouterr().out
    assert (tmp_path / "data" / "ragtide.db").exists()
