"""``ragtide ingest --bulk``: a first load into PostgreSQL with the search indexes built
after it; the documents are searchable by both indexes once the command returns. A store
without a bulk mode, or ``--url``, is refused with exit code 2 and a message."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ragtide import cli
from ragtide.builtin._pg_sql import POSTINGS_INDEX
from tests.contract.test_postgres_store import URL

pytestmark = pytest.mark.integration


@pytest.fixture
def schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    env = {
        "RAGTIDE_DATA_DIR": str(tmp_path / "data"),
        "RAGTIDE_STORE__USE": "postgres",
        "RAGTIDE_STORE__CONFIG__URL": URL,
        "RAGTIDE_STORE__CONFIG__DB_SCHEMA": name,
        "RAGTIDE_EMBEDDER__USE": "hashing",  # the store is what is tested
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield name
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _valid_indexes(schema: str) -> dict[str, int]:
    """The schema's valid indexes by name, and their oids (a rebuilt index has a new one)."""
    with psycopg.connect(URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.oid::int FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND i.indisvalid",
            (schema,),
        ).fetchall()
    return {name: oid for name, oid in rows}


def test_a_bulk_load_builds_the_search_indexes_after_it(
    schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, corpus = tmp_path / "first.txt", tmp_path / "corpus.jsonl"
    first.write_text("The first document, ingested as usual.")
    with corpus.open("w") as out:
        for i in range(300):
            out.write(json.dumps({"_id": f"d{i}", "text": f"Ledger entry {i} zq{i}x of note."}))
            out.write("\n")
    assert cli.main(["ingest", str(first), "-n", "books", "-q"]) == 0
    before = _valid_indexes(schema)
    hnsw = [name for name in before if name.startswith("chunks_halfvec_")]
    assert POSTINGS_INDEX[0] in before and len(hnsw) == 1

    assert cli.main(["ingest", str(corpus), "-n", "books", "-q", "--json", "--bulk"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["created"], summary["chunks"]) == (300, 300)
    after = _valid_indexes(schema)
    # Both search indexes were dropped for the load and built again after it: new oids.
    for name in (POSTINGS_INDEX[0], hnsw[0]):
        assert name in after and after[name] != before[name]
    assert cli.main(["search", "zq123x", "-n", "books", "--top-k", "1"]) == 0
    assert "d123" in capsys.readouterr().out


def test_bulk_needs_a_store_with_a_bulk_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGTIDE_DATA_DIR", str(tmp_path / "data"))
    corpus = tmp_path / "a.txt"
    corpus.write_text("Some text.")
    assert cli.main(["ingest", str(corpus), "--bulk"]) == 2
    assert "'sqlite' store has no bulk mode" in capsys.readouterr().err
    assert cli.main(["ingest", str(corpus), "--bulk", "--url", "http://127.0.0.1:9"]) == 2
    assert "not with --url" in capsys.readouterr().err
    assert not (tmp_path / "data" / "ragtide.db").exists()  # nothing was written
