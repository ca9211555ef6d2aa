"""Top-k BM25 by MaxScore over ``Postings``: the best ``k`` chunks without scoring every one.

Exhaustive BM25 (``Postings.scores``) reads every posting of every query term and then
ranks an array as long as the namespace. ``top_k`` returns the same chunks with the same
scores (up to float rounding of the sum's order), reading fewer postings and never a
namespace-long array:

1. Each query term gets an upper bound on what it can add to any chunk's score: its idf
   times the highest BM25 saturation among its postings, found from a few points per
   segment (``_points``: each frequency with the shortest chunk that has it; a table
   computed once per segment, since segments are immutable).
2. A first threshold: the exact scores of the chunks in the postings of the highest-bound
   terms, enough of them to fill ``k``. The ``k``-th of those is a score the final
   ``k``-th must reach.
3. MaxScore: the terms whose bounds, smallest first, add up to less than the threshold
   are *non-essential*: a chunk that has only those cannot reach the top ``k``. Only the
   essential terms' postings name candidates (the long postings of frequent, low-idf terms
   usually are not among them). The essential terms' contributions are summed per
   candidate straight from their postings; the skipped terms' are looked up for the
   candidates only, by binary search (positions ascend within a term's postings).
4. Pruning: the skipped terms are looked up highest bound first, and before each one the
   candidates whose sum so far plus the bounds still to come is below the ``k``-th score
   they can be sure of are dropped. A long query's essential terms name tens of thousands
   of candidates; most go before the first look-up, which was most of a search's time.

A search runs steps 2 to 4 as compiled loops instead (``_maxscore``: MaxScore document
at a time, numba; its first threshold only from the few chunks of short lists of the
highest-bound terms, ``_seed``, since the loop raises its own as it goes): what
was left of a search at 1M chunks was spread over many numpy calls, each with temporaries
as long as the candidates. A search whose filter is not a ``SourceFilter`` (decided per
source, as the embedded store's are), and any search where numba is missing, takes the
numpy steps above (same result).

Statistics (``N``, ``df``, average length) are the live chunks', as in ``Postings.scores``;
a term's live ``df`` is counted once per snapshot and remembered.

Below ``EXHAUSTIVE_BELOW`` positions, ``top_k`` scores exhaustively instead: MaxScore's
set-up (bounds, live ``df``, a seed, look-ups) is a fixed cost that a smaller namespace's
whole postings do not repay. Measured with ``python -m ragtide.bench.keyword`` (the scale
corpus, SciFact's queries, top 30, CPU per query, exhaustive against MaxScore): 20k chunks
0.40 against 1.02 ms, 51k 0.84 against 1.53, 103k 1.7-2.6 against 2.0, 310k 4.2 against
3.3; the namespace-long score array is then at most 400 KB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ragtide.builtin import _maxscore
from ragtide.builtin.bm25 import Postings, Segment

__all__ = ["DENSE_RATIO", "EXHAUSTIVE_BELOW", "SCATTER_COST", "SourceFilter", "top_k"]

EXHAUSTIVE_BELOW = 100_000  # positions
# Essential postings summed into a namespace-long array when at least 1/16 as many as
# positions, else per distinct chunk after a sort (measured at 66k and 200k positions).
DENSE_RATIO = 16
# Look-ups by a namespace-long table when binary searches cost more (SciFact queries over
# 200k documents: 3.8 -> 3.1 ms per search; 0 never uses the table).
SCATTER_COST = 1.0
SEED_PER_RESULT = 16  # chunks scored for the first threshold, per result wanted, at most
SEED_SHORT = 4  # ... by the compiled loop's seed (``_seed``)
SEED_LIST = 64  # entries per result wanted a term's list may have to give that seed

_I64 = npt.NDArray[np.int64]
_F32 = npt.NDArray[np.float32]
_Bool = npt.NDArray[np.bool_]


Admit = Callable[[_I64], _Bool]  # positions -> which of them a search may return


@dataclass(frozen=True, slots=True)
class SourceFilter:
    """An ``Admit`` decided per source: position ``p`` is admitted if
    ``admitted[source[p]]`` (a store's filter, tested once per distinct document and
    metadata). The compiled loop reads these arrays itself."""

    admitted: _Bool  # per source
    source: npt.NDArray[np.int32]  # per position

    def __call__(self, positions: _I64) -> _Bool:
        return self.admitted[self.source[positions]]


_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float32))
_NO_DEAD = np.zeros(0, np.bool_)
_NO_SOURCE = np.zeros(0, np.int32)


def _points(
    segment: Segment, lengths: npt.NDArray[np.float32], index: int, lo: int, hi: int
) -> tuple[npt.NDArray[np.generic], _F32]:
    """The ``index``-th term of ``segment`` (entries ``lo:hi``) as a few points: each
    frequency it has, with the shortest chunk among its entries of that frequency.

    BM25's saturation rises with the frequency and falls with the length, so over the
    entries it peaks at one of these points, whatever average length the statistics give
    at search time: the term's bound is exact, where the saturation at its highest
    frequency in its shortest chunk (rarely one entry) held a long query's mid-frequency
    terms essential. From the segment's ``frontier`` table (computed once, compiled);
    without numba, from the entries, each time."""
    table = segment.frontier(lengths)
    if table is not None:
        return table.of(index)
    tf = segment.tf[lo:hi]
    shortest = np.full(int(tf.max()) + 1, np.inf, np.float32)
    np.minimum.at(shortest, tf, lengths[segment.chunk[lo:hi]])
    held = np.flatnonzero(np.isfinite(shortest))
    return held, shortest[held]


def _bound(
    idf: float,
    points: Sequence[tuple[npt.NDArray[np.generic], _F32]],
    k1: float,
    b: float,
    avgdl: float,
) -> float:
    """The most a term adds to any chunk's score: the highest BM25 saturation at its
    segments' ``_points``, a little above (float32 rounding of the exact path)."""
    tf = np.concatenate([f for f, _ in points]).astype(np.float64)
    short = np.concatenate([length for _, length in points]).astype(np.float64)
    saturation = tf * (k1 + 1) / (tf + k1 * (1 - b + b * short / avgdl))
    return idf * float(saturation.max()) * (1 + 1e-5) + 1e-6


class _Term:
    __slots__ = ("bound", "df", "idf", "lists", "spans", "top_tf")

    def __init__(self) -> None:
        self.lists: list[tuple[npt.NDArray[np.int32], npt.NDArray[np.uint16]]] = []
        self.spans: dict[int, tuple[int, int]] = {}  # segment index -> its entries [lo, hi)
        self.df = 0
        self.idf = np.float32(0)
        self.bound = 0.0
        self.top_tf = 0.0  # its highest frequency in any chunk


def top_k(
    postings: Postings,
    query_ids: Sequence[int],
    k: int,
    admit: Admit | None = None,
    *,
    exhaustive_below: int = EXHAUSTIVE_BELOW,
    dense_ratio: float = DENSE_RATIO,
    scatter_cost: float = SCATTER_COST,
    compiled: bool = True,
) -> tuple[_I64, _F32]:
    """Positions and BM25 scores of the best ``k`` live chunks ``admit`` lets through,
    best first (ties by position); only chunks with a query term score. Namespaces of
    fewer than ``exhaustive_below`` positions are scored exhaustively (same result);
    larger ones by ``_maxscore``'s compiled loop (``admit`` None or a ``SourceFilter``)
    unless ``compiled`` is false or numba is missing: then with numpy, where
    ``dense_ratio`` and ``scatter_cost`` pick how postings are summed and looked up (same
    result)."""
    query = list(dict.fromkeys(int(t) for t in query_ids if t >= 0))
    if not query or not postings.live or k <= 0:
        return _EMPTY
    if len(postings) < exhaustive_below:
        return _exhaustive(postings, query, k, admit)
    n, k1, b = postings.live, postings.k1, postings.b
    avgdl = postings.total / n if postings.total > 0 else 1.0
    alive, lengths = postings.alive, postings.lengths
    terms: list[_Term] = []  # those with live postings
    qarr = np.asarray(query, np.int64)
    per_term = [_Term() for _ in query]
    points: list[list[tuple[npt.NDArray[np.generic], _F32]]] = [[] for _ in query]
    for s, segment in enumerate(postings.segments):
        lo, hi = segment.spans(qarr)
        held = np.flatnonzero(hi - lo)
        index = np.searchsorted(segment.terms, qarr[held])
        for j, i in zip(held.tolist(), index.tolist(), strict=True):
            a, z = int(lo[j]), int(hi[j])
            per_term[j].lists.append((segment.chunk[a:z], segment.tf[a:z]))
            per_term[j].spans[s] = (a, z)
            points[j].append(_points(segment, lengths, i, a, z))
    for j, term in enumerate(per_term):
        if not term.lists:
            continue
        term.df = _live_df(postings, query[j], term.lists)
        if not term.df:
            continue
        df = np.array([term.df], np.float32)  # as Postings.scores computes it
        term.idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)[0]
        term.top_tf = max(float(f.max()) for f, _ in points[j])
        term.bound = _bound(float(term.idf), points[j], k1, b, avgdl)
        terms.append(term)
    if not terms:
        return _EMPTY
    c1, c2 = np.float32(k1 * (1 - b)), np.float32(k1 * b / avgdl)

    def score(candidates: _I64) -> _F32:
        total = np.zeros(len(candidates), np.float64)
        _add_looked_up(
            total,
            terms,
            candidates,
            c1 + c2 * lengths[candidates],
            k1,
            postings.chunks,
            scatter_cost,
        )
        return total.astype(np.float32)

    def usable(candidates: _I64) -> _I64:
        if alive is not None:
            candidates = candidates[alive[candidates]]
        if admit is not None and len(candidates):
            candidates = candidates[admit(candidates)]
        return candidates

    # A first threshold from a few chunks of the highest-bound terms (``_seed``): any
    # chunks give a valid one, the best-looking few of a list most of it.
    by_bound = sorted(terms, key=lambda t: t.bound, reverse=True)
    norm = (c1, c2, lengths)
    by_source = admit if isinstance(admit, SourceFilter) else None
    loops = _maxscore.kernels() if compiled and (admit is None or by_source) else None
    if loops is not None:
        # The loop raises its own threshold as it goes: a seed pays only where rare
        # terms decide, so only short lists give one, and only a few chunks of them.
        seeded = _seed(by_bound, k, SEED_SHORT, norm, usable, longest=SEED_LIST * k)
        return _compiled(loops, postings, terms, k, seeded, (c1, c2, k1), by_source)
    seeded = _seed(by_bound, k, SEED_PER_RESULT, norm, usable)
    threshold = 0.0
    if len(seeded) >= k:
        seeded_scores = score(seeded)
        threshold = float(np.partition(seeded_scores, len(seeded) - k)[len(seeded) - k])
    # MaxScore: the smallest bounds that add up to less than the threshold are skipped.
    ascending = sorted(terms, key=lambda t: t.bound)
    skipped, reach = 0, 0.0
    for term in ascending:
        if reach + term.bound >= threshold:
            break
        reach += term.bound
        skipped += 1
    essential, rest = ascending[skipped:], ascending[:skipped]
    # The essential terms' postings are read whole: their contributions are summed per
    # candidate straight from them; the skipped terms are looked up for the candidates.
    chunk = np.concatenate([c for term in essential for c, _ in term.lists])
    tf = np.concatenate([t for term in essential for _, t in term.lists]).astype(np.float32)
    idf = np.concatenate(
        [np.full(len(c), term.idf, np.float32) for term in essential for c, _ in term.lists]
    )
    weights = idf * tf * np.float32(k1 + 1) / (tf + c1 + c2 * lengths[chunk])
    sums: npt.NDArray[np.float64]
    if len(chunk) * dense_ratio >= postings.chunks:  # summing by position beats sorting
        dense = np.bincount(chunk, weights=weights, minlength=postings.chunks)
        # Every contribution is positive; a chunk that even every skipped term could not
        # lift to the threshold is out already (the pruning of ``_complete``).
        floor = threshold * (1 - 1e-5) - sum(term.bound for term in rest)  # rounding
        candidates = np.flatnonzero(dense >= floor if floor > 0 else dense)
        sums = dense[candidates].astype(np.float64, copy=False)
    else:
        named, owner = np.unique(chunk, return_inverse=True)
        candidates = named.astype(np.int64)
        sums = np.bincount(owner, weights=weights).astype(np.float64, copy=False)
    keep = np.ones(len(candidates), np.bool_)
    if alive is not None:
        keep &= alive[candidates]
    if admit is not None:
        keep[keep] = admit(candidates[keep])
    candidates, sums = candidates[keep], sums[keep]
    if not len(candidates):
        return _EMPTY
    if rest:
        candidates, sums = _complete(
            candidates,
            sums,
            rest,
            threshold,
            k,
            (c1, c2, lengths, postings.chunks),
            k1,
            scatter_cost,
        )
    return _best(candidates, sums.astype(np.float32), k)


def _seed(
    by_bound: Sequence[_Term],
    k: int,
    per_result: int,
    length_norm: tuple[np.float32, np.float32, _F32],
    usable: Callable[[_I64], _I64],
    *,
    longest: int | None = None,
) -> _I64:
    """Chunks whose exact scores give a first threshold: the ``per_result * k``
    highest-weighted entries (idf, frequency for their length: a rare term's before a
    common one's) of the highest-bound terms' lists, enough of them to fill ``4 * k``;
    with ``longest``, only lists of at most that many entries (none if the highest-bound
    term's is longer). The compiled loop asks for that: at 1M chunks on SciFact's queries
    the numpy path's seed (16 per result, lists of any length) cost 0.45 ms of look-ups and
    0.2 ms of selection to save the loop 0.3 ms; where a rare term decides (a few chunks
    hold it, every other term is common) a seed of its chunks spares the loop most of the
    others."""
    c1, c2, lengths = length_norm
    chunks: list[npt.NDArray[np.int32]] = []
    weights: list[_F32] = []
    size = 0
    for term in by_bound:
        length = sum(len(chunk) for chunk, _ in term.lists)
        if longest is not None and length > longest:
            break
        for chunk, tfs in term.lists:
            tf = tfs.astype(np.float32)
            chunks.append(chunk)
            weight = term.idf * tf / (tf + c1 + c2 * lengths[chunk])
            weights.append(weight.astype(np.float32, copy=False))
        size += length
        if size >= 4 * k:
            break
    if not chunks:
        return np.zeros(0, np.int64)
    seed, weighed = np.concatenate(chunks), np.concatenate(weights)
    if len(seed) > per_result * k:
        seed = seed[np.argpartition(-weighed, per_result * k)[: per_result * k]]
    return usable(np.unique(seed).astype(np.int64))


def _compiled(
    loops: _maxscore.Kernels,
    postings: Postings,
    terms: Sequence[_Term],
    k: int,
    seeded: _I64,
    bm25: tuple[np.float32, np.float32, float],
    admit: SourceFilter | None,
) -> tuple[_I64, _F32]:
    """``top_k`` by ``_maxscore``'s compiled loops: the ``seeded`` chunks' exact scores
    (admitted ones) give a first threshold, then MaxScore runs a segment at a time (their
    positions rise from one to the next)."""
    c1, c2, k1 = bm25
    k1p1 = np.float32(k1 + 1)
    ascending = sorted(terms, key=lambda t: t.bound)
    prefix = np.cumsum([t.bound for t in ascending], dtype=np.float64)
    idf = np.array([t.idf for t in ascending], np.float32)
    top_tf = np.array([t.top_tf for t in ascending], np.float32)
    bound = np.array([t.bound for t in ascending], np.float64)
    m, lengths = len(ascending), _maxscore.frozen(postings.lengths)
    spans = []
    for s, segment in enumerate(postings.segments):
        lo, hi = np.zeros(m, np.int64), np.zeros(m, np.int64)
        for i, term in enumerate(ascending):
            lo[i], hi[i] = term.spans.get(s, (0, 0))
        if (hi - lo).any():
            spans.append((_maxscore.frozen(segment.chunk), _maxscore.frozen(segment.tf), lo, hi))
    threshold = 0.0
    if len(seeded) >= k:
        total = np.zeros(len(seeded), np.float64)
        seeded = _maxscore.frozen(seeded)
        for chunk, tf, lo, hi in spans:
            loops.accumulate(chunk, tf, lo, hi, idf, lengths, c1, c2, k1p1, seeded, total)
        kth = float(np.partition(total, len(total) - k)[len(total) - k])
        threshold = float(np.float32(kth)) * (1 - 1e-5)  # the loop's sums, summed otherwise
    alive = _maxscore.frozen(postings.alive if postings.alive is not None else _NO_DEAD)
    admitted = _maxscore.frozen(admit.admitted if admit is not None else _NO_DEAD)
    source = _maxscore.frozen(admit.source if admit is not None else _NO_SOURCE)
    heap_score, heap_pos = np.zeros(k, np.float32), np.zeros(k, np.int64)
    count = np.zeros(1, np.int64)
    for chunk, tf, lo, hi in spans:
        loops.daat(
            chunk, tf, lo, hi, idf, top_tf, bound, prefix, alive, admitted, source, lengths,
            c1, c2, k1p1, threshold, heap_score, heap_pos, count,
        )  # fmt: skip
    n = int(count[0])
    return _best(heap_pos[:n], heap_score[:n], k)


def _complete(
    candidates: _I64,
    sums: npt.NDArray[np.float64],
    rest: Sequence[_Term],
    threshold: float,
    k: int,
    length_norm: tuple[np.float32, np.float32, _F32, int],
    k1: float,
    scatter_cost: float,
) -> tuple[_I64, npt.NDArray[np.float64]]:
    """The skipped terms' contributions added, highest bound first; before each term,
    candidates that cannot reach the ``k``-th score any more are dropped.

    A candidate's final score is at most its sum so far plus the bounds of the terms not
    yet added, and the ``k``-th final score is at least ``threshold`` and at least the
    ``k``-th sum so far (sums only grow): a candidate below both by its upper bound is out,
    so the result is exact. Most candidates of a long query named only by its essential
    terms go after the first look-ups, which were most of a search's time.
    ``length_norm`` is (c1, c2, lengths, positions): a chunk's BM25 length term is
    ``c1 + c2 * lengths[chunk]``, computed for the candidates left.
    """
    c1, c2, lengths, positions = length_norm
    remaining = sum(term.bound for term in rest)
    for term in sorted(rest, key=lambda t: t.bound, reverse=True):
        if len(candidates) > k:
            floor = max(threshold, float(np.partition(sums, len(sums) - k)[len(sums) - k]))
            keep = sums + remaining >= floor
            if not keep.all():
                candidates, sums = candidates[keep], sums[keep]
        norm = c1 + c2 * lengths[candidates]
        _add_looked_up(sums, [term], candidates, norm, k1, positions, scatter_cost)
        remaining -= term.bound
    return candidates, sums


def _exhaustive(
    postings: Postings, query: Sequence[int], k: int, admit: Admit | None
) -> tuple[_I64, _F32]:
    """``top_k`` from every chunk's score (``Postings.scores``: deleted chunks score 0)."""
    all_scores = postings.scores(query)
    if all_scores is None:
        return _EMPTY
    candidates = np.flatnonzero(all_scores > 0)
    if admit is not None and len(candidates):
        candidates = candidates[admit(candidates)]
    return _best(candidates, all_scores[candidates], k)


def _best(candidates: _I64, scores: _F32, k: int) -> tuple[_I64, _F32]:
    """The ``k`` best of ``candidates`` by ``scores``, best first, ties by position."""
    if len(candidates) > k:  # the k-th score and every tie with it, then by position
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        candidates, scores = candidates[keep], scores[keep]
    order = np.lexsort((candidates, -scores))[:k]
    return candidates[order], scores[order]


def _add_looked_up(
    total: npt.NDArray[np.floating | np.integer],
    terms: Sequence[_Term],
    candidates: _I64,
    norm: _F32,
    k1: float,
    positions: int,
    scatter_cost: float,
) -> None:
    """Add to ``total`` each term's BM25 contribution to each candidate, found by binary
    search in the term's postings (a candidate missing from them adds nothing), or, when
    the searches would cost more (``scatter_cost`` weighs them), by writing the postings'
    frequencies into a table of the ``positions`` and reading the candidates' from it."""
    m = len(candidates)
    for term in terms:
        for chunk, tfs in term.lists:
            n = len(chunk)
            if m * np.log2(n + 1) * scatter_cost > n + positions / 16:
                # Many candidates against a long list: a namespace-long table beats
                # a binary search per candidate.
                table = np.zeros(positions, np.uint16)
                table[chunk] = tfs
                tf = table[candidates].astype(np.float32)
                hit = tf > 0
                tf = tf[hit]
            else:
                at = np.searchsorted(chunk, candidates)
                at[at >= n] = n - 1
                hit = chunk[at] == candidates
                tf = tfs[at[hit]].astype(np.float32)
            total[hit] += term.idf * tf * np.float32(k1 + 1) / (tf + norm[hit])


def _live_df(
    postings: Postings, term: int, lists: list[tuple[npt.NDArray[np.int32], npt.NDArray[np.uint16]]]
) -> int:
    """Live chunks with ``term``: the postings' length, or counted once per snapshot."""
    if postings.alive is None:
        return sum(len(chunk) for chunk, _ in lists)
    cache = postings.df_cache
    found = cache.get(term)
    if found is None:
        alive = postings.alive
        found = sum(int(np.count_nonzero(alive[chunk])) for chunk, _ in lists)
        if len(cache) > 100_000:
            cache.clear()
        cache[term] = found
    return found
