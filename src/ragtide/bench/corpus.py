"""Corpora of any size from the shared SciFact and SQuAD texts, for the scale benches.

``build_corpus(data, chunks, out)`` writes about ``chunks`` chunks' worth of documents as
``.jsonl`` shards (``{"_id", "title", "text"}`` per line, as ``ragtide ingest`` reads
them), plus the SciFact queries and judgments to measure nDCG@10 inside the corpus:

- **SciFact's own corpus** is in every corpus (its documents judged relevant to the chosen
  queries first, when the corpus is too small for all 5,183), under its own ids, so the
  ``qrels.tsv`` written beside the shards apply unchanged.
- **Filler documents** (``mix-<n>``) are runs of consecutive sentences from the SciFact
  abstracts and the SQuAD paragraphs, each run starting at a random sentence and taking
  one more source when a source ends. Half are one chunk long (90-170 words), half two
  (215-300 words), so a corpus holds ~1.5 chunks per document at the default chunking
  (200 words, 40 of overlap). Sentences of the documents judged relevant to the chosen
  queries are left out of the filler, so the judgments stay true inside the big corpus.
- **Every text is unique** (a duplicate draw is drawn again).
- **Deterministic**: the same data, size and seed give byte-identical files; a corpus
  already built with the same parameters (``manifest.json``) is reused.

``queries.jsonl`` holds ``queries`` SciFact train queries that have judgments (a seeded
sample), ``qrels.tsv`` their judgments. Nothing here is imported at module import.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtide.bench.data import read_jsonl, read_qrels

__all__ = ["CHUNKS_PER_DOCUMENT", "Corpus", "build_corpus", "corpus_documents"]

CHUNKS_PER_DOCUMENT = 1.5
FORMAT = 1  # bump when the generated text changes: a cached corpus is rebuilt
_SHORT = (90, 170)  # words of a one-chunk filler document
_LONG = (215, 300)  # words of a two-chunk one
_SQUAD = ("squad-dev-13art", "squad-v2-dev-10art")


@dataclass(frozen=True, slots=True)
class Corpus:
    """A corpus on disk: its shards, queries and judgments."""

    directory: Path
    shards: tuple[Path, ...]
    documents: int
    scifact_documents: int
    target_chunks: int
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {document id: relevance}

    @property
    def queries_path(self) -> Path:
        return self.directory / "queries.jsonl"

    @property
    def qrels_path(self) -> Path:
        return self.directory / "qrels.tsv"


def _sentences(text: str) -> list[str]:
    from ragtide.text import split_sentences

    return [s for s in (x.strip() for x in split_sentences(text)) if len(s.split()) >= 4]


@dataclass(slots=True)
class _Pool:
    """Sentences of the filler's sources, source by source: ``start[i]`` is source i's first."""

    sentences: list[str]
    words: list[int]
    source_end: list[int]  # per sentence: one past its source's last sentence
    titles: list[str]  # per sentence: its source's title


def _pool(data: Path, excluded: set[str]) -> _Pool:
    pool = _Pool([], [], [], [])
    sources: list[tuple[str, str]] = [
        (str(d.get("title") or ""), str(d["text"]))
        for d in read_jsonl(data / "scifact" / "corpus.jsonl")
        if str(d["_id"]) not in excluded
    ]
    for name in _SQUAD:
        path = data / name / "corpus.jsonl"
        if path.exists():
            sources += [(str(d.get("title") or ""), str(d["text"])) for d in read_jsonl(path)]
    for title, text in sources:
        sentences = _sentences(text)
        end = len(pool.sentences) + len(sentences)
        for s in sentences:
            pool.sentences.append(s)
            pool.words.append(len(s.split()))
            pool.source_end.append(end)
            pool.titles.append(title)
    return pool


def _filler(pool: _Pool, rng: random.Random, words: int) -> tuple[str, str]:
    """(title, text): consecutive sentences from a random start until ``words`` words."""
    i = rng.randrange(len(pool.sentences))
    title = pool.titles[i]
    parts: list[str] = []
    count = 0
    while count < words:
        if i >= len(pool.source_end) or (parts and i >= pool.source_end[i - 1]):
            i = rng.randrange(len(pool.sentences))  # the source ended: jump to another
        parts.append(pool.sentences[i])
        count += pool.words[i]
        i += 1
    return title, " ".join(parts)


def _selection(
    data: Path, queries: int, seed: int
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    scifact = data / "scifact"
    texts = {str(q["_id"]): str(q["text"]) for q in read_jsonl(scifact / "queries.train.jsonl")}
    qrels = read_qrels(scifact / "qrels.train.tsv")
    judged = sorted(q for q in qrels if q in texts)
    chosen = sorted(random.Random(seed).sample(judged, min(queries, len(judged))), key=judged.index)
    return {q: texts[q] for q in chosen}, {q: qrels[q] for q in chosen}


def corpus_documents(
    data: Path, chunks: int, *, seed: int = 0, queries: int = 200
) -> Iterator[dict[str, Any]]:
    """The corpus's documents in file order (SciFact's first, then the filler)."""
    total = max(1, round(chunks / CHUNKS_PER_DOCUMENT))
    _, qrels = _selection(data, queries, seed)
    relevant = {d for judged in qrels.values() for d in judged}
    scifact = list(read_jsonl(data / "scifact" / "corpus.jsonl"))
    # Judged documents first, so a small corpus still holds every answer.
    scifact.sort(key=lambda d: str(d["_id"]) not in relevant)
    seen: set[bytes] = set()
    emitted = 0
    for doc in scifact[:total]:
        seen.add(hashlib.blake2b(str(doc["text"]).encode(), digest_size=12).digest())
        yield {"_id": str(doc["_id"]), "title": str(doc.get("title") or ""), "text": doc["text"]}
        emitted += 1
    if emitted >= total:
        return
    pool = _pool(data, relevant)
    rng = random.Random(f"ragtide-corpus:{seed}")
    n = 0
    while emitted < total:
        low, high = _SHORT if rng.random() < 0.5 else _LONG
        title, text = _filler(pool, rng, rng.randint(low, high))
        digest = hashlib.blake2b(text.encode(), digest_size=12).digest()
        if digest in seen:
            continue
        seen.add(digest)
        yield {"_id": f"mix-{n}", "title": title, "text": text}
        n += 1
        emitted += 1


def build_corpus(
    data: Path,
    chunks: int,
    out: Path,
    *,
    seed: int = 0,
    queries: int = 200,
    shard_documents: int = 50_000,
) -> Corpus:
    """Write (or reuse) the corpus of ~``chunks`` chunks in ``out``; see the module docstring.

    Shards hold at most ``shard_documents`` lines (below the parser's default
    ``max_jsonl_lines``), so each can be ingested as one file.
    """
    if chunks < 1 or shard_documents < 1:
        raise ValueError("chunks and shard_documents must be positive")
    params = {
        "format": FORMAT,
        "chunks": chunks,
        "seed": seed,
        "queries": queries,
        "shard_documents": shard_documents,
    }
    manifest_path = out / "manifest.json"
    chosen, qrels = _selection(data, queries, seed)
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        shards = tuple(out / s for s in manifest.get("shards", ()))
        if manifest.get("params") == params and all(s.exists() for s in shards):
            return Corpus(
                out,
                shards,
                manifest["documents"],
                manifest["scifact_documents"],
                chunks,
                chosen,
                qrels,
            )
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    for old in out.glob("corpus-*.jsonl"):
        old.unlink()
    shards_written: list[Path] = []
    documents = scifact_documents = 0
    sink = None
    try:
        for doc in corpus_documents(data, chunks, seed=seed, queries=queries):
            if documents % shard_documents == 0:
                if sink is not None:
                    sink.close()
                path = out / f"corpus-{len(shards_written):04d}.jsonl"
                shards_written.append(path)
                sink = path.open("w", encoding="utf-8")
            assert sink is not None
            sink.write(json.dumps(doc, ensure_ascii=False) + "\n")
            documents += 1
            scifact_documents += not doc["_id"].startswith("mix-")
    finally:
        if sink is not None:
            sink.close()
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, text in chosen.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (out / "qrels.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in qrels.items():
            for doc_id, score in sorted(judged.items()):
                f.write(f"{qid}\t{doc_id}\t{score}\n")
    manifest = {
        "params": params,
        "shards": [p.name for p in shards_written],
        "documents": documents,
        "scifact_documents": scifact_documents,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return Corpus(out, tuple(shards_written), documents, scifact_documents, chunks, chosen, qrels)


def main(argv: list[str] | None = None) -> int:
    """``python -m ragtide.bench.corpus CHUNKS OUT [--data DIR] [--seed N]``."""
    import argparse

    from ragtide.bench.data import data_dir

    parser = argparse.ArgumentParser(prog="python -m ragtide.bench.corpus")
    parser.add_argument("chunks", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    corpus = build_corpus(
        data_dir(args.data), args.chunks, args.out, seed=args.seed, queries=args.queries
    )
    print(json.dumps({"shards": [str(s) for s in corpus.shards], "documents": corpus.documents}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
