"""BM25 over in-memory postings: the analyzer and the scorer the stores share.

Text is analysed once, at ingestion, into (term, frequency) pairs; a store keeps them
per chunk and indexes a namespace in memory as term-major postings, so a query costs a
few vectorised numpy operations per query term instead of a scan of every match.
Scoring is Okapi BM25 with Lucene's idf, ``ln(1 + (N - df + 0.5) / (df + 0.5))``.

``Postings`` are immutable snapshots that change by producing the next one, the way
Lucene and tantivy segments do: ``add`` indexes new chunks as a small segment (merged
with its neighbours when they are of a size, dropping deleted entries as it goes) and
``remove`` marks chunks deleted. A reader keeps the snapshot it started with. ``N``,
``df`` and the average length count live chunks only and are taken at query time, so a
snapshot reached by any sequence of ``add``/``remove`` scores exactly as one built from
its live chunks at once (``compact`` renumbers them so).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ragtide.builtin.analyzer import Analyzer

__all__ = ["Analyzer", "Frontier", "Merged", "Postings", "Segment"]

_I32 = npt.NDArray[np.int32]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
_U16 = npt.NDArray[np.uint16]
_F32 = npt.NDArray[np.float32]
_Bool = npt.NDArray[np.bool_]

# A new segment is merged into the one before it while it holds at least this share of
# that one's entries: segment sizes fall geometrically, so there are O(log n) of them
# and every entry is rewritten O(log n) times.
_MERGE_RATIO = 4
# Segments of this many entries (~12,000 chunks) of namespaces of this many chunks get
# their ``frontier`` when made or loaded (at 1M chunks the first 40 searches had cost
# 4.6 ms on average against 3.3 when bounds were found per term at search time). Smaller
# namespaces are ranked exhaustively (``wand.EXHAUSTIVE_BELOW``) and never load numba.
EAGER_FRONTIER = 1 << 20
EAGER_FRONTIER_CHUNKS = 100_000
# Entries a segment's build sorts at a time (``_term_major``): its temporaries, ~40 bytes
# an entry, stay ~10 MB whatever the segment's size.
_BLOCK = 1 << 18


class Frontier(NamedTuple):
    """``Segment.frontier``: term ``i``'s points are ``start[i]:start[i + 1]``."""

    start: _I64
    tf: _U16
    length: _F32

    def of(self, i: int) -> tuple[_U16, _F32]:
        """Term ``i``'s (frequencies, shortest chunk of each)."""
        lo, hi = int(self.start[i]), int(self.start[i + 1])
        return self.tf[lo:hi], self.length[lo:hi]


@dataclass(slots=True, frozen=True)
class Segment:
    """Term-major postings of some chunks: term ``terms[i]`` has entries ``start[i]:start[i+1]``.

    An entry is a chunk's position and the term's frequency in it. ``terms`` holds only
    the segment's own terms (sorted), so a one-chunk segment is a few bytes whatever the
    size of the vocabulary.
    """

    terms: _U32
    start: _I64
    chunk: _I32
    tf: _U16
    # ``frontier``'s table once computed (a list: the segment is otherwise immutable)
    bounds: list[Frontier] = field(default_factory=list, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.chunk)

    def frontier(self, lengths: _F32) -> Frontier | None:
        """Each term's distinct frequencies, each with the shortest chunk (``lengths``:
        per position) among its entries of that frequency: the few points where its BM25
        saturation can peak, so MaxScore's bound for the term (``wand``) is exact, at any
        average length. One compiled pass over the whole segment the first time (~4 ns
        an entry; None without numba), remembered: a deleted entry only loosens it."""
        if not self.bounds:
            from ragtide.builtin import _maxscore

            loops = _maxscore.kernels()
            if loops is None:
                return None
            frozen = _maxscore.frozen
            start, tf, length = loops.frontier(
                frozen(self.start), frozen(self.chunk), frozen(self.tf), frozen(lengths)
            )
            self.bounds.append(Frontier(start, tf, length))
        return self.bounds[0]

    @classmethod
    def build(cls, ids: _U32, chunk: _I32, tf: _U16, *, block: int = _BLOCK) -> Segment:
        """From entries in any order (a chunk's entries in position order stay so)."""
        pieces = ((lo, min(lo + block, len(ids))) for lo in range(0, len(ids), block))
        return _term_major(ids, tf, ((lo, hi, chunk[lo:hi]) for lo, hi in pieces))

    @classmethod
    def of_chunks(
        cls, ids: _U32, tf: _U16, counts: _I64, first: int, *, block: int = _BLOCK
    ) -> Segment:
        """From chunks' entries concatenated: chunk ``first + i`` has ``counts[i]`` of them
        (``build`` without an array of their positions)."""
        pieces = (
            (lo, hi, np.repeat(np.arange(first + c0, first + c1, dtype=np.int32), counts[c0:c1]))
            for c0, c1, lo, hi in _cuts(counts, block)
        )
        return _term_major(ids, tf, pieces)

    def entries(self) -> tuple[_U32, _I32, _U16]:
        """(term, chunk, tf) of every entry, term-major."""
        return np.repeat(self.terms, np.diff(self.start)), self.chunk, self.tf

    def spans(self, query: _I64) -> tuple[_I64, _I64]:
        """[lo, hi) of each query term's entries (empty where the segment lacks it)."""
        i = np.searchsorted(self.terms, query)
        found = i < len(self.terms)
        found[found] = self.terms[i[found]] == query[found]
        lo = np.where(found, self.start[np.minimum(i, len(self.terms))], 0)
        hi = np.where(found, self.start[np.minimum(i + 1, len(self.terms))], 0)
        return lo, hi


def _cuts(counts: _I64, block: int) -> list[tuple[int, int, int, int]]:
    """Chunks ``c0:c1`` and their entries ``lo:hi``, in runs of about ``block`` entries
    (a run ends with a whole chunk)."""
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    ends = np.searchsorted(offsets[1:], np.arange(block, total, block), side="left") + 1
    bounds = np.unique(np.concatenate(([0], ends, [len(counts)])))
    return [
        (int(c0), int(c1), int(offsets[c0]), int(offsets[c1]))
        for c0, c1 in pairwise(bounds.tolist())
    ]


def _term_major(ids: _U32, tf: _U16, pieces: Iterable[tuple[int, int, _I32]]) -> Segment:
    """The segment of entries ``(ids[lo:hi], chunk, tf[lo:hi])`` given piece by piece, in
    order: the entries in term order, stably, as ``np.argsort(ids, kind="stable")`` puts
    them.

    A counting sort (term ids are dense small integers): the terms' entry counts give
    their starts, then each piece, sorted on its own, is scattered after the entries of
    the pieces before it. Besides the result it holds one count per term id and one
    piece's temporaries, where sorting all entries at once held ~26 bytes per entry, four
    times the segment (the peak of a namespace's load). Ids too sparse for a table of
    them (a few chunks' entries in a large vocabulary) are argsorted whole.
    """
    n = len(ids)
    if not n:
        return Segment(
            np.zeros(0, np.uint32),
            np.zeros(1, np.int64),
            np.zeros(0, np.int32),
            np.zeros(0, np.uint16),
        )
    if int(ids.max()) >= n:  # sparse: the table would outweigh the entries
        chunk = np.concatenate([owner for _, _, owner in pieces])
        order = np.argsort(ids, kind="stable")
        return _grouped(ids[order], chunk[order], tf[order])
    cursor = np.bincount(ids)  # entries per term id, then where its next entry goes
    terms = np.flatnonzero(cursor).astype(np.uint32)
    start = np.zeros(len(terms) + 1, np.int64)
    np.cumsum(cursor[terms], out=start[1:])
    cursor[terms] = start[:-1]
    chunk_out = np.empty(n, np.int32)
    tf_out = np.empty(n, np.uint16)
    for lo, hi, owner in pieces:
        if lo == hi:
            continue
        order = np.argsort(ids[lo:hi], kind="stable")
        key = ids[lo:hi][order]
        heads = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        sizes = np.diff(np.append(heads, len(key)))
        first = cursor[key[heads]]
        to = np.arange(len(key), dtype=np.int64)
        to += np.repeat(first - heads, sizes)
        chunk_out[to] = owner[order]
        tf_out[to] = tf[lo:hi][order]
        cursor[key[heads]] = first + sizes
        del order, key, to
    return Segment(terms, start, chunk_out, tf_out)


def _grouped(ids: _U32, chunk: _I32, tf: _U16) -> Segment:
    """The segment of entries already in term order."""
    bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    terms = ids[np.concatenate(([0], bounds))]
    start = np.concatenate(([0], bounds, [len(ids)])).astype(np.int64)
    return Segment(terms, start, chunk, tf)


def _merge(segments: Sequence[Segment], alive: _Bool | None, remap: _I32 | None = None) -> Segment:
    """One segment of the live entries of ``segments`` (positions renumbered by ``remap``)."""
    parts = [s.entries() for s in segments]
    ids = np.concatenate([p[0] for p in parts])
    chunk = np.concatenate([p[1] for p in parts])
    tf = np.concatenate([p[2] for p in parts])
    if alive is not None:
        keep = alive[chunk]
        ids, chunk, tf = ids[keep], chunk[keep], tf[keep]
    if remap is not None:
        chunk = remap[chunk]
    return Segment.build(ids, chunk, tf)


class Merged:
    """The live entries of ``segments`` as the arrays of one segment, positions renumbered
    by ``remap``, made a block of about ``block`` entries at a time: what ``_merge``
    makes, without holding it, so that an index that serves meanwhile can be written out
    (``_pg_local``'s refreshed snapshots) for a few tens of megabytes rather than a second
    copy of its postings and the sort's temporaries (~16 bytes an entry).

    ``terms`` and ``start`` are whole (a few bytes a term); ``chunk`` and ``tf``
    give the entries' positions and frequencies piece by piece, in order, each time they
    are iterated. ``segments`` are in position order (as ``Postings`` keeps them), so a
    term's entries stay in rising position order.
    """

    def __init__(
        self,
        segments: Sequence[Segment],
        alive: _Bool | None,
        remap: _I32 | None,
        *,
        block: int = 4 * _BLOCK,
    ) -> None:
        self._segments, self._alive, self._remap = tuple(segments), alive, remap
        parts = [s.terms for s in self._segments]
        union = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint32)
        counts = np.zeros(len(union), np.int64)  # entries per term, live or not
        for s in self._segments:
            counts[np.searchsorted(union, s.terms)] += np.diff(s.start)
        ends = np.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        cuts = np.searchsorted(ends, np.arange(block, total, block), side="left") + 1
        bounds = np.unique(np.concatenate(([0], cuts, [len(union)]))).tolist()
        self._union, self._blocks = union, list(pairwise(bounds))
        live = np.zeros(len(union), np.int64)
        for lo, hi in self._blocks:
            term = self._block(lo, hi)[0]
            live[lo:hi] = np.bincount(np.searchsorted(union[lo:hi], term), minlength=hi - lo)
        kept = live > 0
        self.terms: _U32 = union[kept].astype(np.uint32)
        self.start: _I64 = np.zeros(len(self.terms) + 1, np.int64)
        np.cumsum(live[kept], out=self.start[1:])

    def __len__(self) -> int:
        """The live entries."""
        return int(self.start[-1])

    @property
    def chunk(self) -> Column:
        """The entries' positions, a block at a time."""
        return Column(self, 1)

    @property
    def tf(self) -> Column:
        """The entries' frequencies, a block at a time."""
        return Column(self, 2)

    def pieces(self, which: int) -> Iterator[_I32 | _U16]:
        """The entries' positions (``which`` 1) or frequencies (2), a block at a time."""
        for lo, hi in self._blocks:
            _, chunk, tf = self._block(lo, hi)
            if which == 2:
                yield tf
            else:
                yield chunk if self._remap is None else self._remap[chunk]

    def _block(self, lo: int, hi: int) -> tuple[_U32, _I32, _U16]:
        """The live entries of terms ``union[lo:hi]``, term-major."""
        first, last = self._union[lo], self._union[hi - 1]
        terms, chunks, tfs = [], [], []
        for s in self._segments:
            i0 = int(np.searchsorted(s.terms, first, side="left"))
            i1 = int(np.searchsorted(s.terms, last, side="right"))
            e0, e1 = int(s.start[i0]), int(s.start[i1])
            term = np.repeat(s.terms[i0:i1], np.diff(s.start[i0 : i1 + 1]))
            chunk, tf = s.chunk[e0:e1], s.tf[e0:e1]
            if self._alive is not None:
                keep = self._alive[chunk]
                term, chunk, tf = term[keep], chunk[keep], tf[keep]
            terms.append(term)
            chunks.append(chunk)
            tfs.append(tf)
        term, chunk, tf = np.concatenate(terms), np.concatenate(chunks), np.concatenate(tfs)
        if len(self._segments) > 1:  # each part is term-major: interleave them, stably
            order = np.argsort(term, kind="stable")
            term, chunk, tf = term[order], chunk[order], tf[order]
        return term, chunk, tf


@dataclass(frozen=True, slots=True)
class Column:
    """One of ``Merged``'s entry arrays: its length, and its pieces each time it is
    iterated."""

    merged: Merged
    which: int

    def __len__(self) -> int:
        return len(self.merged)

    def __iter__(self) -> Iterator[_I32 | _U16]:
        return self.merged.pieces(self.which)


def _prepare(segments: Iterable[Segment], lengths: _F32, chunks: int) -> None:
    """The ``frontier`` of each segment of ``EAGER_FRONTIER`` entries or more of a
    namespace of ``EAGER_FRONTIER_CHUNKS`` or more; a smaller segment's costs its first
    MaxScore search a few milliseconds at most."""
    if chunks < EAGER_FRONTIER_CHUNKS:
        return
    for segment in segments:
        if len(segment) >= EAGER_FRONTIER:
            segment.frontier(lengths)


@dataclass(slots=True, frozen=True)
class Postings:
    """BM25 postings of one namespace's chunks at positions ``0..chunks-1``.

    Immutable: ``add``, ``remove`` and ``compact`` return the next snapshot. Snapshots of
    one lineage share the length buffer (a later one only writes past the positions an
    earlier one reads), and the segments they have in common. Arrays may be read-only
    (mapped from a saved snapshot): nothing here writes into one.
    """

    segments: tuple[Segment, ...]
    lengths: _F32  # per position; may be longer than ``chunks`` (room to append)
    alive: _Bool | None  # None: every position is live
    chunks: int  # positions, live or not
    live: int
    total: float  # sum of the live chunks' lengths
    k1: float = 1.2
    b: float = 0.75
    # How far this lineage's length buffer is written: a snapshot appends in place only
    # if nothing was appended after it, so an earlier snapshot can still be extended.
    claimed: list[int] = field(default_factory=lambda: [0])
    df_cache: dict[int, int] = field(default_factory=dict, compare=False, repr=False)  # live df

    def __len__(self) -> int:
        return self.chunks

    @property
    def dead(self) -> int:
        return self.chunks - self.live

    @classmethod
    def empty(cls, k1: float = 1.2, b: float = 0.75) -> Postings:
        return cls((), np.zeros(0, np.float32), None, 0, 0, 0.0, k1, b, [0])

    @classmethod
    def build(
        cls,
        term_ids: Sequence[npt.NDArray[np.uint32]],
        term_tfs: Sequence[npt.NDArray[np.uint16]],
        k1: float = 1.2,
        b: float = 0.75,
        *,
        spare: int = 0,
    ) -> Postings:
        """Postings of chunks ``0..len(term_ids)-1`` (room for ``spare`` more lengths)."""
        return cls.empty(k1, b).add(term_ids, term_tfs, spare=spare)

    def add(
        self,
        term_ids: Sequence[npt.NDArray[np.uint32]],
        term_tfs: Sequence[npt.NDArray[np.uint16]],
        *,
        spare: int = 0,
    ) -> Postings:
        """The next snapshot, with chunks at positions ``chunks..chunks+len(term_ids)-1``."""
        counts = np.fromiter((len(t) for t in term_ids), np.int64, len(term_ids))
        ids = np.concatenate(term_ids) if len(term_ids) else np.zeros(0, np.uint32)
        tfs = np.concatenate(term_tfs) if len(term_tfs) else np.zeros(0, np.uint16)
        return self.add_flat(ids, tfs, counts, spare=spare)

    def add_flat(self, ids: _U32, tfs: _U16, counts: _I64, *, spare: int = 0) -> Postings:
        """``add`` with the chunks' (sorted) term ids and frequencies concatenated:
        chunk ``i`` has ``counts[i]`` of them."""
        n, k = self.chunks, len(counts)
        if not k:
            return self
        ids, tfs = ids.astype(np.uint32, copy=False), tfs.astype(np.uint16, copy=False)
        cuts = _cuts(counts, _BLOCK)
        sums = np.zeros(k, np.float64)  # exact: integers
        for c0, c1, lo, hi in cuts:
            owner = np.repeat(np.arange(c1 - c0, dtype=np.int32), counts[c0:c1])
            sums[c0:c1] = np.bincount(owner, weights=tfs[lo:hi], minlength=c1 - c0)
        added = sums.astype(np.float32)
        del sums
        lengths = self.lengths
        # Another snapshot writes past n, no room, or a saved snapshot's mapped (read-only)
        # lengths: a buffer of this lineage's own.
        if self.claimed[0] != n or n + k > len(lengths) or not lengths.flags.writeable:
            grown = np.empty(max(n + k + spare, n + n // 4), np.float32)
            grown[:n] = lengths[:n]
            lengths, claimed = grown, [n + k]
        else:
            claimed = self.claimed
            claimed[0] = n + k
        lengths[n : n + k] = added
        alive = self.alive
        if alive is not None:
            alive = np.concatenate((alive, np.ones(k, np.bool_)))
        segments = list(self.segments)
        if len(ids):
            segments.append(Segment.of_chunks(ids, tfs, counts, n))
        while len(segments) > 1 and len(segments[-1]) * _MERGE_RATIO >= len(segments[-2]):
            segments[-2:] = [_merge(segments[-2:], alive)]
        _prepare(segments, lengths, n + k)  # new ones: in the writer's time, not a search's
        return Postings(
            tuple(segments),
            lengths,
            alive,
            n + k,
            self.live + k,
            self.total + float(added.sum(dtype=np.float64)),
            self.k1,
            self.b,
            claimed,
        )

    def remove(self, positions: _I64 | _I32) -> Postings:
        """The next snapshot, without the chunks at ``positions`` (live ones)."""
        if not len(positions):
            return self
        alive = np.ones(self.chunks, np.bool_) if self.alive is None else self.alive.copy()
        dead = np.unique(positions)
        dead = dead[alive[dead]]
        alive[dead] = False
        removed = float(self.lengths[dead].sum(dtype=np.float64))
        live = self.live - len(dead)
        total = self.total - removed if live else 0.0
        return Postings(
            self.segments,
            self.lengths,
            alive,
            self.chunks,
            live,
            total,
            self.k1,
            self.b,
            self.claimed,
        )

    def compact(self, *, spare: int = 0) -> tuple[Postings, _I64]:
        """Live chunks renumbered ``0..live-1`` in order, and their old positions."""
        keep = np.arange(self.chunks) if self.alive is None else np.flatnonzero(self.alive)
        remap = np.full(self.chunks, -1, np.int32)
        remap[keep] = np.arange(len(keep), dtype=np.int32)
        segments = (_merge(self.segments, self.alive, remap),) if self.segments else ()
        lengths = np.empty(len(keep) + spare, np.float32)
        lengths[: len(keep)] = self.lengths[keep]
        _prepare(segments, lengths, len(keep))
        total = float(lengths[: len(keep)].sum(dtype=np.float64))
        postings = Postings(
            segments, lengths, None, len(keep), len(keep), total, self.k1, self.b, [len(keep)]
        )
        return postings, keep

    def prepare(self) -> Postings:
        """Large segments' ``frontier`` computed now (by a load, in its thread), so no
        search pays for one; ``add`` and ``compact`` do it for the segments they make."""
        _prepare(self.segments, self.lengths, self.chunks)
        return self

    def scores(self, query_ids: Sequence[int]) -> _F32 | None:
        """BM25 score of every position (0 where no term matches or the chunk is deleted);
        None if nothing matches."""
        query = np.fromiter(dict.fromkeys(int(t) for t in query_ids if t >= 0), np.int64)
        if not len(query) or not self.live:
            return None
        chunks, tfs, slots = [], [], []
        for segment in self.segments:
            lo, hi = segment.spans(query)
            counts = hi - lo
            hit = np.flatnonzero(counts)
            if not len(hit):
                continue
            lo, counts = lo[hit], counts[hit]
            if len(hit) == 1:
                index: _I64 | slice = slice(int(lo[0]), int(lo[0] + counts[0]))
            else:
                offsets = np.cumsum(counts) - counts
                index = np.arange(int(counts.sum())) + np.repeat(lo - offsets, counts)
            chunks.append(segment.chunk[index])
            tfs.append(segment.tf[index])
            slots.append(np.repeat(hit, counts))
        if not chunks:
            return None
        chunk = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        tf = (np.concatenate(tfs) if len(tfs) > 1 else tfs[0]).astype(np.float32)
        slot = np.concatenate(slots) if len(slots) > 1 else slots[0]
        if self.alive is not None:
            keep = self.alive[chunk]
            chunk, tf, slot = chunk[keep], tf[keep], slot[keep]
            if not len(chunk):
                return None
        n, k1, b = self.live, self.k1, self.b
        avgdl = self.total / n if self.total > 0 else 1.0
        df = np.bincount(slot, minlength=len(query)).astype(np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        norm = np.float32(k1 * (1 - b)) + np.float32(k1 * b / avgdl) * self.lengths[chunk]
        weights = idf[slot] * tf * np.float32(k1 + 1) / (tf + norm)
        return np.bincount(chunk, weights=weights, minlength=self.chunks).astype(np.float32)


def pack(counts: Mapping[str, int], ids: dict[str, int]) -> tuple[bytes, bytes]:
    """Serialise one chunk's term counts as (uint32 ids, uint16 frequencies) blobs."""
    pairs = sorted((ids[t], min(c, 65535)) for t, c in counts.items())
    return (
        np.fromiter((p[0] for p in pairs), np.uint32, len(pairs)).tobytes(),
        np.fromiter((p[1] for p in pairs), np.uint16, len(pairs)).tobytes(),
    )


def unpack(ids: bytes, tfs: bytes) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint16]]:
    return np.frombuffer(ids, np.uint32), np.frombuffer(tfs, np.uint16)
