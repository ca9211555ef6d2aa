"""The embedded store's writer packs a document's term counts at once and remembers the
term ids it has seen: the stored rows are those of the straightforward path (each chunk's
counts decoded and packed by ``bm25.pack``, each document's new terms given ids in term
order), also after a rolled-back write and another process's new terms."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import apsw
import numpy as np
import pytest

from ragtide.builtin.analyzer import Analyzer, decode_terms, encode_terms
from ragtide.builtin.bm25 import pack
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Chunk, Filter

pytestmark = pytest.mark.anyio

DOCUMENTS = {
    "herons": ["Grey herons wade in shallow water and hunt fish.", "Herons nest in colonies."],
    "storks": ["Storks nest on roofs and chimneys in spring."],
    "egrets": ["Egrets and herons both hunt fish in marshes.", "", "Egrets egrets egrets."],
}


def _with_terms(chunks: Sequence[Chunk], given: Sequence[str | None]) -> list[Chunk]:
    return [dataclasses.replace(c, terms=t) for c, t in zip(chunks, given, strict=True)]


def _chunks(document_id: str, analyzer: Analyzer) -> list[Chunk]:
    chunks = make_chunks(document_id, DOCUMENTS[document_id], title=document_id.title())
    return _with_terms(chunks, [encode_terms(analyzer.chunk_terms(c)) for c in chunks])


def _expected_ids(documents: Sequence[Sequence[dict[str, int]]]) -> dict[str, int]:
    """Term ids as the straightforward writer gives them: each document's new terms in
    term order, after the terms of the documents before it."""
    ids: dict[str, int] = {}
    for counts in documents:
        for term in sorted(set().union(*counts) - set(ids)):
            ids[term] = len(ids) + 1
    return ids


def _rows(path: Path) -> tuple[dict[str, int], list[tuple[str, bytes, bytes]]]:
    conn = apsw.Connection(str(path))
    try:
        terms = {str(t): int(i) for t, i in conn.execute("SELECT term, id FROM terms")}
        rows = [
            (str(c), bytes(i), bytes(f))
            for c, i, f in conn.execute("SELECT chunk_id, term_ids, term_tfs FROM chunks")
        ]
        return terms, rows
    finally:
        conn.close()


async def _put(store: SQLiteStore, document_id: str, chunks: Sequence[Chunk]) -> None:
    vectors = np.ones((len(chunks), 4), np.float32)
    await store.put_documents("ns", [(make_document(document_id), chunks, vectors)], "e")


async def test_stored_terms_are_the_straightforward_packing(tmp_path: Path) -> None:
    analyzer = Analyzer()
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    odd = make_chunks("odd", ["one", "two", "three", "four"])
    # Counted by the store itself, none, a term given twice (the last count stands), a
    # count past what a uint16 holds (capped at 65535).
    odd = _with_terms(odd, [None, "", "wade 2 zebra 1 wade 5", "heron 70000 apple 1"])
    again = make_chunks("storks", ["White storks migrate to Africa.", "Storks clatter."])
    again = _with_terms(again, [encode_terms(analyzer.chunk_terms(c)) for c in again])
    written = [(d, _chunks(d, analyzer)) for d in ("herons", "storks", "egrets")]
    written += [("odd", odd), ("herons", _chunks("herons", analyzer))]  # replaced
    try:
        for document_id, chunks in written:
            await _put(store, document_id, chunks)
        # One batch repeating a document's id: written twice, in order.
        batch = [("egrets", _chunks("storks", analyzer)), ("egrets", again)]
        await store.put_documents(
            "ns",
            [(make_document(d), c, np.ones((len(c), 4), np.float32)) for d, c in batch],
            "e",
        )
        written += batch
        hits = await store.keyword_search("ns", "zebra", 10, Filter())
    finally:
        await store.aclose()

    def counts(chunk: Chunk) -> dict[str, int]:
        return analyzer.chunk_terms(chunk) if chunk.terms is None else decode_terms(chunk.terms)

    terms, rows = _rows(tmp_path / "db")
    assert terms == _expected_ids([[counts(c) for c in chunks] for _, chunks in written])
    stored = dict(written)  # each document's last write
    expected = [(c.id, *pack(counts(c), terms)) for d in stored for c in stored[d]]
    assert sorted(rows) == sorted(expected)
    assert [h.chunk.id for h in hits] == ["odd#2"]


async def test_a_rolled_back_write_leaves_no_remembered_term(tmp_path: Path) -> None:
    """Terms a failed transaction gave ids to are forgotten: the next write gives their
    ids to other terms, and a remembered one would index a chunk by the wrong term."""
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    try:
        await _put(store, "a", _with_terms(make_chunks("a", ["a"]), ["apple 1"]))
        # The first document's new term is given an id, then the second fails (metadata
        # that is no JSON): the transaction is rolled back.
        mango = _with_terms(make_chunks("b", ["b"]), ["mango 1"])
        broken = make_chunks("x", ["x"], metadata={"when": object()})
        vectors = np.ones((1, 4), np.float32)
        with pytest.raises(TypeError):
            await store.put_documents(
                "ns",
                [(make_document("b"), mango, vectors), (make_document("x"), broken, vectors)],
                "e",
            )
        assert await store.get_document("ns", "b") is None
        await _put(store, "c", _with_terms(make_chunks("c", ["c"]), ["kiwi 1"]))
        await _put(store, "d", _with_terms(make_chunks("d", ["d"]), ["mango 3"]))
        hits = await store.keyword_search("ns", "mango", 5, Filter())
        assert [h.chunk.id for h in hits] == ["d#0"]
        assert [h.chunk.id for h in await store.keyword_search("ns", "kiwi", 5, Filter())] == [
            "c#0"
        ]
    finally:
        await store.aclose()
    terms, rows = _rows(tmp_path / "db")
    assert terms == {"apple": 1, "kiwi": 2, "mango": 3}
    assert dict((r[0], r[1:]) for r in rows)["d#0"] == pack({"mango": 3}, terms)


async def test_terms_another_writer_added_are_looked_up(tmp_path: Path) -> None:
    """A term another process gave an id since this writer last saw the file is found
    there (inserting it again would break the terms' uniqueness)."""
    path = tmp_path / "db"
    one = SQLiteStore(SQLiteStore.Config(path=path))
    other = SQLiteStore(SQLiteStore.Config(path=path))
    await one.start()
    await other.start()
    try:
        await _put(one, "a", _with_terms(make_chunks("a", ["a"]), ["apple 1"]))
        await _put(other, "b", _with_terms(make_chunks("b", ["b"]), ["pear 1 apple 2"]))
        await _put(one, "c", _with_terms(make_chunks("c", ["c"]), ["pear 4 fig 1"]))
    finally:
        await one.aclose()
        await other.aclose()
    terms, rows = _rows(path)
    assert terms == {"apple": 1, "pear": 2, "fig": 3}
    assert dict((r[0], r[1:]) for r in rows)["c#0"] == pack({"pear": 4, "fig": 1}, terms)


async def test_a_malformed_term_text_is_refused_as_before(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    try:
        for bad, error in (("apple", ValueError), ("apple x", ValueError), ("a -1", OverflowError)):
            chunks = _with_terms(make_chunks("a", ["a"]), [bad])
            with pytest.raises(error):
                decode_terms(bad) if error is ValueError else pack(decode_terms(bad), {"a": 1})
            with pytest.raises(error):
                await _put(store, "a", chunks)
        assert await store.get_document("ns", "a") is None
    finally:
        await store.aclose()


async def test_a_store_started_again_on_a_new_file_forgets_the_old_ids(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = SQLiteStore(SQLiteStore.Config(path=path))
    await store.start()
    await _put(store, "a", _with_terms(make_chunks("a", ["a"]), ["apple 1 pear 1"]))
    await store.aclose()
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    await store.start()
    try:
        await _put(store, "b", _with_terms(make_chunks("b", ["b"]), ["pear 2"]))
    finally:
        await store.aclose()
    terms, rows = _rows(path)
    assert terms == {"pear": 1}
    assert rows == [("b#0", *pack({"pear": 2}, terms))]
