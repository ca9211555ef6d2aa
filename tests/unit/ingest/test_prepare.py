"""``prepare``: what a parse worker hands back, the chunks' term counts among it."""

from __future__ import annotations

import dataclasses
import pickle

from ragtide.builtin.analyzer import Analyzer, decode_terms, encode_terms
from ragtide.ingest.prepare import Prepared, PrepareJob, prepare

MARKDOWN = b"""# Herons

Grey herons wade in shallow water and hunt fish. Herons nest in colonies.

## Nesting

A heronry holds dozens of nests, rebuilt every spring by the same herons.
"""


def _prepared(job: PrepareJob) -> list[Prepared]:
    out = prepare(job)
    assert all(isinstance(p, Prepared) for p in out)
    return [p for p in out if isinstance(p, Prepared)]


def test_chunks_come_back_with_the_terms_a_store_would_count() -> None:
    analyzer = Analyzer()
    jobs = [
        PrepareJob("herons.md", MARKDOWN, max_words=12, overlap_words=2, count_terms=True),
        PrepareJob(
            "records.jsonl",
            b'{"_id": "a", "title": "Egrets", "text": "Egrets fish, egrets wade."}\n'
            b'{"_id": "b", "text": "Storks nest on roofs."}\n',
            first_line=1,
            count_terms=True,
        ),
    ]
    chunks = [c for job in jobs for p in _prepared(job) for c in p.chunks]
    assert len(chunks) >= 4
    for chunk in chunks:
        assert chunk.terms is not None
        assert decode_terms(chunk.terms) == analyzer.chunk_terms(chunk)
        assert chunk.terms  # every chunk here has content words
    egrets = chunks[-2].terms
    assert egrets is not None
    assert decode_terms(egrets) == {"egret": 3, "fish": 1, "wade": 1}  # the title counts too
    # They cross to the parent process with the chunk, and are no part of its value.
    again = pickle.loads(pickle.dumps(chunks[0]))
    assert again.terms == chunks[0].terms
    assert dataclasses.replace(chunks[0], terms=None) == chunks[0]


def test_term_counts_survive_their_text_form() -> None:
    counts = {"heron": 3, "o'neil": 1, "café": 2, "x": 65535}
    assert decode_terms(encode_terms(counts)) == counts
    assert decode_terms(encode_terms({})) == {}


def test_terms_are_counted_only_when_the_job_asks() -> None:
    # A store that analyses each field its own way (PostgreSQL) would not use them.
    chunks = [c for p in _prepared(PrepareJob("herons.md", MARKDOWN)) for c in p.chunks]
    assert chunks and all(c.terms is None for c in chunks)
