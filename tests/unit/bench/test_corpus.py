"""The scale benches' corpus builder: unique, deterministic, SciFact judgments kept true."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtide.bench.corpus import CHUNKS_PER_DOCUMENT, build_corpus, corpus_documents
from ragtide.bench.data import read_jsonl, read_qrels
from ragtide.ingest.chunking import chunk_document
from ragtide.types import ParsedDocument, Section

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA / "scifact").is_dir(), reason="the shared evaluation data is not beside the checkout"
)


def _chunks(doc: dict[str, str]) -> int:
    parsed = ParsedDocument(title=doc["title"], sections=(Section(doc["text"]),), id=doc["_id"])
    return len(chunk_document(parsed, doc["_id"]))


def test_same_parameters_give_byte_identical_shards(tmp_path: Path) -> None:
    a = build_corpus(DATA, 9_000, tmp_path / "a", shard_documents=2_500, queries=20)
    b = build_corpus(DATA, 9_000, tmp_path / "b", shard_documents=2_500, queries=20)
    assert [p.name for p in a.shards] == [p.name for p in b.shards]
    assert len(a.shards) == 3  # 6,000 documents in shards of 2,500
    for x, y in zip(a.shards, b.shards, strict=True):
        assert x.read_bytes() == y.read_bytes()
    assert a.documents == 6_000 == sum(1 for s in a.shards for _ in read_jsonl(s))


def test_another_seed_gives_other_filler() -> None:
    first = [d["text"] for d in corpus_documents(DATA, 9_000, seed=0)][-50:]
    other = [d["text"] for d in corpus_documents(DATA, 9_000, seed=1)][-50:]
    assert first != other


def test_texts_unique_scifact_whole_and_about_one_and_a_half_chunks_each() -> None:
    docs = list(corpus_documents(DATA, 15_000))
    texts = [d["text"] for d in docs]
    assert len(set(texts)) == len(texts) == 10_000
    assert len({d["_id"] for d in docs}) == len(docs)
    scifact = {str(d["_id"]) for d in read_jsonl(DATA / "scifact" / "corpus.jsonl")}
    assert scifact <= {d["_id"] for d in docs}
    filler = [d for d in docs if d["_id"].startswith("mix-")]
    sample = filler[:: max(1, len(filler) // 1500)]
    ratio = sum(_chunks(d) for d in sample) / len(sample)
    assert abs(ratio - CHUNKS_PER_DOCUMENT) < 0.1


def test_small_corpus_keeps_the_judged_documents_and_judgments_hold(tmp_path: Path) -> None:
    corpus = build_corpus(DATA, 600, tmp_path, queries=30)
    ids = {d["_id"] for s in corpus.shards for d in read_jsonl(s)}
    assert corpus.documents == 400 == len(ids)
    assert len(corpus.queries) == 30
    judged = {d for q in corpus.qrels.values() for d in q}
    assert judged <= ids
    assert read_qrels(corpus.qrels_path) == corpus.qrels
    written = {q["_id"]: q["text"] for q in read_jsonl(corpus.queries_path)}
    assert written == corpus.queries


def test_filler_never_quotes_a_judged_document(tmp_path: Path) -> None:
    corpus = build_corpus(DATA, 12_000, tmp_path, queries=50)
    judged = {d for q in corpus.qrels.values() for d in q}
    relevant = [
        d["text"] for d in read_jsonl(DATA / "scifact" / "corpus.jsonl") if str(d["_id"]) in judged
    ]
    # The first sentence of each judged abstract (long enough to be distinctive).
    openings = {t.split(". ")[0] for t in relevant if len(t.split(". ")[0]) > 60}
    assert openings
    filler = [
        d["text"] for s in corpus.shards for d in read_jsonl(s) if d["_id"].startswith("mix-")
    ]
    assert filler
    assert not any(o in text for text in filler for o in openings)


def test_a_built_corpus_is_reused_and_rebuilt_when_parameters_change(tmp_path: Path) -> None:
    first = build_corpus(DATA, 900, tmp_path, queries=10)
    stamp = first.shards[0].stat().st_mtime_ns
    again = build_corpus(DATA, 900, tmp_path, queries=10)
    assert again.shards[0].stat().st_mtime_ns == stamp
    bigger = build_corpus(DATA, 1_200, tmp_path, queries=10)
    assert bigger.documents == 800
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["params"]["chunks"] == 1_200
