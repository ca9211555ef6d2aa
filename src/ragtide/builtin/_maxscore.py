"""MaxScore document at a time, as one compiled loop (numba): ``wand.top_k``'s big-namespace path.

``wand`` ranks with numpy a term at a time: every step is a vectorised call, but each
makes a temporary as long as the candidates, and at 1M chunks what was left of a query's
cost was spread over many such calls (9 ms). Here the same ranking is one loop over the
query terms' postings in position order, as search engines run it (Turtle and Flood's
MaxScore, document at a time):

- the terms are sorted by their score bound, ascending; ``prefix[i]`` is the sum of the
  bounds of terms ``0..i``;
- terms whose ``prefix`` is below the floor (the ``k``-th score so far, or the seed
  threshold the caller proved) are *non-essential*: a chunk with only those cannot reach
  the top ``k``, so only the essential terms' postings name the chunks visited, smallest
  position first;
- a visited chunk's essential contributions are summed, then the non-essential terms are
  looked up, highest bound first (a galloping search forward from where that term's cursor
  last stopped), until the sum plus what the terms still to come could add falls below the
  floor (each term's contribution at its highest frequency and this chunk's own length,
  or its bound over all chunks where that is lower);
- a chunk that reaches the floor enters a heap of the ``k`` best; as the floor rises, more
  terms become non-essential.

Exact: the same chunks and scores as exhaustive BM25. Each contribution is computed in
float32 as ``wand`` computes it and summed in float64; the heap compares the float32
sums. Positions rise through the loop, so a chunk that ties the ``k``-th score loses to
the earlier one already held, as ``wand._best`` breaks ties by position.

A namespace's segments hold disjoint, rising ranges of positions: the loop runs over one
segment at a time and the heap carries over. Live chunks only (``alive``, empty when all
are), and of those only the ones a filter admits (``admitted[source[position]]``: a
filter is decided once per distinct document and metadata, ``wand.SourceFilter``).

Compiled at the first search that needs it (``kernels``: numba, about a second; cached on
disk where numba can write its cache, ``NUMBA_CACHE_DIR``; compiled per process where it
cannot), never at import, and once: ``wand`` passes every input array read-only, mapped or
not. The GIL is released while it runs. Without numba, ``kernels`` returns None and
``wand`` ranks with numpy (same result).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "Kernels",
    "accumulate",
    "cap",
    "contribution",
    "daat",
    "first_named",
    "frontier",
    "frozen",
    "gallop",
    "kernels",
]

_log = logging.getLogger(__name__)


_T = TypeVar("_T", bound=np.generic)


def frozen(array: npt.NDArray[_T]) -> npt.NDArray[_T]:
    """``array`` as read-only (a view if it was not): the compiled loops take every input
    so, whether mapped from a saved snapshot or not, and are compiled for that alone (a
    second compilation would hold the GIL for a second mid-serving)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


def gallop(chunk: Any, at: Any, stop: Any, wanted: Any) -> Any:
    """The first entry of ``chunk[at:stop]`` (rising positions) at or past ``wanted``
    (``stop`` if none): steps of 1, 2, 4... forward from ``at``, then a binary search in
    the last step. A cursor moving forward through a list pays for the distance it
    moves, not for the list's length."""
    step = 1
    while at + step < stop and chunk[at + step] < wanted:
        at += step
        step *= 2
    top = min(at + step, stop)
    while at < top and chunk[at] < wanted:
        middle = (at + top) // 2
        if chunk[middle] < wanted:
            at = middle + 1
        else:
            top = middle
    return at


def contribution(idf: Any, f: Any, k1p1: Any, norm: Any) -> Any:
    """A term's BM25 part at frequency ``f`` for a chunk of length term ``norm``, in
    float32 as ``wand`` computes it."""
    return idf * f * k1p1 / (f + norm)


def cap(idf: Any, top_tf: Any, k1p1: Any, norm: Any, bound: Any) -> Any:
    """The most a term can add to a chunk of length term ``norm``: its contribution at its
    highest frequency there, a little above for float32 rounding, or the term's bound
    over all its entries if that is lower."""
    return min(bound, contribution(idf, top_tf, k1p1, norm) * 1.00001 + 1e-6)


def first_named(chunk: Any, cursor: Any, hi: Any, start: Any, end: Any) -> Any:
    """The smallest position the cursors of terms ``start..`` stand at (``end``: none)."""
    current = end
    for i in range(start, len(cursor)):
        if cursor[i] < hi[i] and chunk[cursor[i]] < current:
            current = chunk[cursor[i]]
    return current


def daat(
    chunk: Any,  # int32[:], a segment's positions, term-major
    tf: Any,  # uint16[:], aligned with ``chunk``
    lo: Any,  # int64[:], each term's first entry in this segment (terms by bound, ascending)
    hi: Any,  # int64[:], one past its last (== lo: not in this segment)
    idf: Any,  # float32[:], per term
    top_tf: Any,  # float32[:], per term: its highest frequency in any chunk
    bound: Any,  # float64[:], per term: the most it adds to any chunk's score
    prefix: Any,  # float64[:], the sum of the bounds of terms 0..i
    alive: Any,  # bool[:], live positions; empty: every one
    admitted: Any,  # bool[:], per source: whether a filter admits its chunks; empty: all
    source: Any,  # int32[:], per position: its source (document and metadata)
    lengths: Any,  # float32[:], per position
    c1: Any,  # float32: k1 * (1 - b)
    c2: Any,  # float32: k1 * b / avgdl
    k1p1: Any,  # float32: k1 + 1
    seed: float,  # a score the k-th best is known to reach (0: none)
    heap_score: Any,  # float32[k], the best so far: a heap, worst at 0
    heap_pos: Any,  # int64[k]
    count: Any,  # int64[1], entries of the heap in use
) -> int:
    """Add this segment's chunks to the heap of the best ``k``; returns chunks scored."""
    m = len(lo)
    k = len(heap_score)
    cursor = lo.copy()
    some_dead = len(alive) > 0
    filtered = len(admitted) > 0
    end = np.int64(1) << np.int64(62)
    floor = seed
    if count[0] == k and heap_score[0] > floor:
        floor = heap_score[0]
    essential = 0
    while essential < m and prefix[essential] < floor:
        essential += 1
    current = first_named(chunk, cursor, hi, essential, end)  # the next an essential names
    scored = 0
    while current != end:
        # The essential terms' contributions, and the chunk they name next.
        here = current
        norm = c1 + c2 * lengths[here]
        total = 0.0
        current = end
        for i in range(essential, m):
            at = cursor[i]
            if at < hi[i]:
                named = np.int64(chunk[at])
                if named == here:
                    f = np.float32(tf[at])
                    total += contribution(idf[i], f, k1p1, norm)
                    at += 1
                    cursor[i] = at
                    named = np.int64(chunk[at]) if at < hi[i] else end
                if named < current:
                    current = named
        if (some_dead and not alive[here]) or (filtered and not admitted[source[here]]):
            continue
        if essential and total + prefix[essential - 1] < floor:
            continue  # even the non-essential terms' bounds cannot lift it
        # What the non-essential terms could add to this chunk: each term's contribution
        # at its highest frequency and this chunk's length, where that is below its bound.
        rest = 0.0
        for i in range(essential):
            rest += cap(idf[i], top_tf[i], k1p1, norm, bound[i])
        i = essential - 1
        while i >= 0:
            if total + rest < floor:
                break
            rest -= cap(idf[i], top_tf[i], k1p1, norm, bound[i])
            stop = hi[i]
            at = cursor[i] = gallop(chunk, cursor[i], stop, here)
            if at < stop and chunk[at] == here:
                f = np.float32(tf[at])
                total += contribution(idf[i], f, k1p1, norm)
            i -= 1
        if i >= 0:
            continue  # pruned: cannot reach the floor
        scored += 1
        score = np.float32(total)
        if score < floor:
            continue
        n = count[0]
        if n < k:
            # Sift up: worse entries (lower score; on a tie, the later position) on top.
            j = n
            while j > 0:
                parent = (j - 1) // 2
                if heap_score[parent] < score or (
                    heap_score[parent] == score and heap_pos[parent] > here
                ):
                    break
                heap_score[j] = heap_score[parent]
                heap_pos[j] = heap_pos[parent]
                j = parent
            heap_score[j] = score
            heap_pos[j] = here
            count[0] = n + 1
        elif score > heap_score[0]:
            # Replace the worst and sift down.
            j = 0
            while True:
                left = 2 * j + 1
                if left >= k:
                    break
                child = left
                right = left + 1
                if right < k and (
                    heap_score[right] < heap_score[left]
                    or (heap_score[right] == heap_score[left] and heap_pos[right] > heap_pos[left])
                ):
                    child = right
                if heap_score[child] > score or (
                    heap_score[child] == score and heap_pos[child] < here
                ):
                    break
                heap_score[j] = heap_score[child]
                heap_pos[j] = heap_pos[child]
                j = child
            heap_score[j] = score
            heap_pos[j] = here
        else:
            continue
        if count[0] == k and heap_score[0] > floor:
            floor = heap_score[0]
            was = essential
            while essential < m and prefix[essential] < floor:
                essential += 1
            if essential != was:  # fewer terms name chunks: the next one is theirs
                current = first_named(chunk, cursor, hi, essential, end)
    return scored


def accumulate(
    chunk: Any,  # int32[:], a segment's positions, term-major
    tf: Any,  # uint16[:]
    lo: Any,  # int64[:], each term's entries in this segment: [lo, hi)
    hi: Any,  # int64[:]
    idf: Any,  # float32[:]
    lengths: Any,  # float32[:]
    c1: Any,  # float32
    c2: Any,  # float32
    k1p1: Any,  # float32
    candidates: Any,  # int64[:], positions, ascending
    total: Any,  # float64[:], aligned with ``candidates``: the terms' contributions added
) -> None:
    """Add each term's contribution to the candidates it has in this segment (the exact
    scores of the few chunks a first threshold is taken from)."""
    for i in range(len(lo)):
        at, stop = lo[i], hi[i]
        for j in range(len(candidates)):
            if at >= stop:
                break
            wanted = candidates[j]
            at = gallop(chunk, at, stop, wanted)
            if at < stop and chunk[at] == wanted:
                f = np.float32(tf[at])
                norm = c1 + c2 * lengths[wanted]
                total[j] += contribution(idf[i], f, k1p1, norm)


def frontier(
    start: Any,  # int64[:], term ``t``'s entries are ``start[t]:start[t + 1]``
    chunk: Any,  # int32[:], the entries' positions
    tf: Any,  # uint16[:], the entries' frequencies
    lengths: Any,  # float32[:], per position
) -> tuple[Any, Any, Any]:
    """Each term's distinct frequencies, each with the shortest chunk among the term's
    entries of that frequency: points ``out_start[t]:out_start[t + 1]`` of ``out_tf`` and
    ``out_length``. Two passes over the entries (how many points, then which), with one
    slot per frequency value that is never reset: a slot belongs to the term being read
    only if it points among that term's points and names the same frequency."""
    terms = len(start) - 1
    slot = np.full(65536, -1, np.int64)
    out_start = np.zeros(terms + 1, np.int64)
    for t in range(terms):
        n = out_start[t]
        for e in range(start[t], start[t + 1]):
            f = tf[e]
            if slot[f] < out_start[t]:
                slot[f] = n
                n += 1
        out_start[t + 1] = n
    points = out_start[terms]
    out_tf = np.zeros(points, np.uint16)
    out_length = np.zeros(points, np.float32)
    slot[:] = -1
    for t in range(terms):
        first = out_start[t]
        n = first
        for e in range(start[t], start[t + 1]):
            f = tf[e]
            length = lengths[chunk[e]]
            at = slot[f]
            if at < first:
                slot[f] = n
                out_tf[n] = f
                out_length[n] = length
                n += 1
            elif length < out_length[at]:
                out_length[at] = length
    return out_start, out_tf, out_length


class Kernels(NamedTuple):
    daat: Callable[..., int]
    accumulate: Callable[..., None]
    frontier: Callable[..., tuple[Any, Any, Any]]


@functools.cache
def kernels() -> Kernels | None:
    """``daat`` and ``accumulate`` compiled (once per process; None without numba, or if
    it fails)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return None
    try:
        return _compiled(cache=True)
    except Exception:  # a cache directory numba cannot use: compile without one
        _log.warning("numba cannot cache the MaxScore loop; compiling it per process")
    try:
        return _compiled(cache=False)
    except Exception:
        _log.exception("numba cannot compile the MaxScore loop; ranking with numpy")
        return None


def _compiled(*, cache: bool) -> Kernels:
    import numba

    _inline_helpers()
    jit = numba.njit(nogil=True, cache=cache)
    return Kernels(daat=jit(daat), accumulate=jit(accumulate), frontier=jit(frontier))


@functools.cache
def _inline_helpers() -> None:
    """Let compiled code call the helpers (compiled into their callers; still plain Python
    functions elsewhere). Once per process: numba keeps the registration."""
    from numba.extending import register_jitable

    for helper in (gallop, contribution, cap, first_named):
        register_jitable(helper)
