"""PostgreSQL schemas as an older ``PostgresStore`` left them, with the rows of a current one.

``write_schema_at(version, source, target)`` runs migrations 1..version on a new schema
(with the bookkeeping ``PostgresStore._migrate`` does) and copies every row of the
current schema ``source`` into it: the rows an older store would have written, since the
columns of each version are a subset of today's with the same values. A store started on
``target`` then migrates it to the current version.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from ragtide.builtin._pg_sql import MIGRATIONS
from tests.contract.test_postgres_store import URL

__all__ = ["write_schema_at"]


def _tables(version: int) -> dict[str, tuple[str, str | None]]:
    """table: (columns copied, identity column or None), as of ``version``."""
    tables: dict[str, tuple[str, str | None]] = {
        "namespaces": (
            "id, name, created_at, generation, embedder, chunk_count, token_count",
            "id",
        ),
        "documents": (
            "namespace_id, id, title, source, content_hash, metadata, chunks, created_at,"
            " updated_at" + (", bytes" if version >= 2 else ""),
            None,
        ),
        "chunks": (
            "id, namespace_id, document_id, position, chunk_id, ordinal, title, headings,"
            " text, metadata, embedder, embedding, length",
            "id",
        ),
        "postings": (
            "namespace_id, term, chunk, length, tf_title, tf_headings, tf_text"
            + (", impact" if version >= 3 else ""),
            None,
        ),
        "terms": ("namespace_id, term, df", None),
    }
    if version >= 2:
        tables["tenants"] = (
            "id, config, version, webhook_secret, created_at, updated_at",
            None,
        )
        tables["api_keys"] = (
            "id, tenant, prefix, hash, scopes, namespaces, description, created_at,"
            " expires_at, revoked_at",
            None,
        )
    return tables


async def write_schema_at(
    version: int, source: str, target: str, after: Sequence[str] = ()
) -> None:
    """``target`` at schema ``version`` holding ``source``'s rows; ``after``: statements
    run in it once the rows are in (the indexes that version's store would have built)."""
    assert 1 <= version < len(MIGRATIONS)
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        async with conn.transaction():
            await conn.execute(f"CREATE SCHEMA {target}")
            await conn.execute(f"SET LOCAL search_path = {target}, public")
            await conn.execute(
                "CREATE TABLE schema_version("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for v in range(1, version + 1):
                await conn.execute(MIGRATIONS[v - 1])
                await conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (v,))
            for table, (columns, identity) in _tables(version).items():
                overriding = " OVERRIDING SYSTEM VALUE" if identity else ""
                await conn.execute(
                    f"INSERT INTO {table}({columns}){overriding}"
                    f" SELECT {columns} FROM {source}.{table}"
                )
                if identity:  # the sequence where the source's is (ids reserved included)
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{target}.{table}',"
                        f" '{identity}'), last_value, is_called)"
                        f" FROM {source}.{table}_{identity}_seq"
                    )
            for statement in after:
                await conn.execute(statement)
            cur = await conn.execute(
                "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c"
                " ON c.oid = p.partrelid WHERE c.relnamespace = %s::regnamespace",
                (target,),
            )
            assert await cur.fetchone() == (0,)  # nothing partitioned before version 6
