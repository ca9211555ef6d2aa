"""BM25 over in-memory postings: the analyzer and the scorer the stores share.

Text is analysed once, at ingestion, into (term, frequency) pairs; a store keeps them
per chunk and builds term-major postings for a namespace in memory, so a query costs a
few vectorised numpy operations per query term instead of a scan of every match.
Scoring is Okapi BM25 with Lucene's idf, ``ln(1 + (N - df + 0.5) / (df + 0.5))``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import Stemmer

from ragtide.text import content_words

__all__ = ["Analyzer", "Postings"]

_I32 = npt.NDArray[np.int32]
_F32 = npt.NDArray[np.float32]


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


@dataclass(slots=True)
class Postings:
    """Term-major postings of one namespace: for term id t, entries ``start[t]:start[t+1]``.

    Each entry holds its chunk and its BM25 term-frequency factor
    ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))``, computed once at build
    time, so a query multiplies each matched entry by its term's idf and sums per chunk.
    """

    start: npt.NDArray[np.int64]
    chunk: _I32  # position of the chunk in the namespace's arrays
    impact: _F32
    chunks: int

    @classmethod
    def build(
        cls,
        term_ids: Sequence[npt.NDArray[np.uint32]],
        term_tfs: Sequence[npt.NDArray[np.uint16]],
        k1: float = 1.2,
        b: float = 0.75,
    ) -> Postings:
        lengths = np.fromiter((int(t.sum()) for t in term_tfs), np.float32, len(term_tfs))
        avgdl = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
        ids = np.concatenate(term_ids) if term_ids else np.zeros(0, np.uint32)
        tfs = np.concatenate(term_tfs).astype(np.float32) if term_tfs else np.zeros(0, np.float32)
        owner = np.repeat(np.arange(len(term_ids), dtype=np.int32), [len(t) for t in term_ids])
        norm = k1 * (1 - b + b * lengths / avgdl)
        impact = (tfs * (k1 + 1) / (tfs + norm[owner])).astype(np.float32)
        order = np.argsort(ids, kind="stable")
        vocab = int(ids.max()) + 1 if len(ids) else 0
        start = np.zeros(vocab + 1, dtype=np.int64)
        np.cumsum(np.bincount(ids, minlength=vocab), out=start[1:])
        return cls(start, owner[order], impact[order], len(term_ids))

    def __len__(self) -> int:
        return self.chunks

    def scores(self, query_ids: Sequence[int]) -> _F32 | None:
        """BM25 score of every chunk (0 where no term matches); None if nothing matches."""
        start, last = self.start, len(self.start) - 1
        spans = [(int(start[t]), int(start[t + 1])) for t in query_ids if 0 <= t < last]
        spans = [(lo, hi) for lo, hi in spans if lo < hi]
        if not spans:
            return None
        n = self.chunks
        df = np.array([hi - lo for lo, hi in spans], np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        if len(spans) == 1:
            index: npt.NDArray[np.int64] | slice = slice(*spans[0])
        else:
            index = np.concatenate([np.arange(lo, hi) for lo, hi in spans])
        weights = self.impact[index] * np.repeat(idf, df.astype(np.int64))
        return np.bincount(self.chunk[index], weights=weights, minlength=n).astype(np.float32)


def pack(counts: Counter[str], ids: dict[str, int]) -> tuple[bytes, bytes]:
    """Serialise one chunk's term counts as (uint32 ids, uint16 frequencies) blobs."""
    pairs = sorted((ids[t], min(c, 65535)) for t, c in counts.items())
    return (
        np.fromiter((p[0] for p in pairs), np.uint32, len(pairs)).tobytes(),
        np.fromiter((p[1] for p in pairs), np.uint16, len(pairs)).tobytes(),
    )


def unpack(ids: bytes, tfs: bytes) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint16]]:
    return np.frombuffer(ids, np.uint32), np.frombuffer(tfs, np.uint16)
