"""Text to index terms: what BM25 counts, in chunks and in queries.

Apart from ``bm25`` so that ingestion's parse workers can count a chunk's terms beside
the chunking without importing numpy (and its thread pools) under their memory limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import Stemmer

from ragtide.text import content_words
from ragtide.types import Chunk

__all__ = ["Analyzer", "decode_terms", "encode_terms"]


class Analyzer:
    """Lower-cased words, English stopwords removed, Snowball (Porter 2) stems."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")

    def terms(self, text: str) -> list[str]:
        return list(self._stemmer.stemWords(content_words(text)))

    def term_counts(self, text: str) -> Counter[str]:
        return Counter(self.terms(text))

    def query_terms(self, text: str, limit: int = 64) -> list[str]:
        return list(dict.fromkeys(self.terms(text)))[:limit]

    def chunk_terms(self, chunk: Chunk) -> dict[str, int]:
        """What a chunk is indexed by: its title, headings and text, counted as one."""
        return dict(self.term_counts(f"{chunk.title}\n{' '.join(chunk.headings)}\n{chunk.text}"))


def encode_terms(counts: Mapping[str, int]) -> str:
    """Term counts as one text, each term followed by its count, all separated by spaces
    (terms never hold a space): a tenth of the memory of a dict while chunks wait to be
    written, and one string to pickle."""
    return " ".join(f"{term} {count}" for term, count in counts.items())


def decode_terms(text: str) -> dict[str, int]:
    """``encode_terms``'s counts."""
    if not text:
        return {}
    parts = text.split(" ")
    return dict(zip(parts[::2], map(int, parts[1::2]), strict=True))
