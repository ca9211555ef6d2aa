"""Saved keyword indexes' byte streams (``ragtide.builtin._pg_snapshot``): what is written
is read back, in any number of parts, and what is damaged is refused."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from ragtide.builtin import _pg_snapshot
from ragtide.builtin._pg_snapshot import (
    Saved,
    Streamed,
    Unusable,
    check_head,
    head_of,
    parse,
    parts,
)


def _saved(rng: np.random.Generator, chunks: int = 200, terms: int = 50) -> Saved:
    df = rng.integers(0, 20, terms)
    start = np.zeros(terms + 1, np.int64)
    np.cumsum(df, out=start[1:])
    chunk = np.concatenate([np.sort(rng.choice(chunks, d, replace=False)) for d in df])
    return Saved(
        ids=np.cumsum(rng.integers(1, 5, chunks)).astype(np.int64),
        lengths=rng.random(chunks).astype(np.float32) * 30,
        terms=np.arange(terms, dtype=np.uint32),
        start=start,
        chunk=chunk.astype(np.int32),
        tf=rng.integers(1, 9, len(chunk)).astype(np.uint16),
        vocabulary=[f"térm{i}" for i in range(terms)],  # not only ASCII
    )


def _stream(saved: Saved | Streamed, generation: int = 7) -> tuple[dict[str, Any], bytearray, str]:
    head, arrays = head_of(saved, generation)
    buffer = bytearray()
    for part in parts(head, arrays):
        assert len(part) <= head["part_bytes"]
        buffer += part
    return head, buffer, hashlib.sha256(buffer).hexdigest()


@pytest.mark.parametrize("part_bytes", [64, 1000, 1 << 20])
def test_a_saved_index_reads_back_equal(part_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pg_snapshot, "PART_BYTES", part_bytes)
    saved = _saved(np.random.default_rng(1))
    head, buffer, digest = _stream(saved)
    assert head["parts"] == -(-head["size"] // part_bytes) and head["generation"] == 7
    assert head["sha256"] == digest
    back = parse(head, buffer, digest)
    for name in ("ids", "lengths", "terms", "start", "chunk", "tf"):
        assert np.array_equal(getattr(back, name), getattr(saved, name)), name
    assert back.vocabulary == saved.vocabulary


def test_an_empty_index_reads_back() -> None:
    empty = Saved(
        np.zeros(0, np.int64),
        np.zeros(0, np.float32),
        np.zeros(0, np.uint32),
        np.zeros(1, np.int64),
        np.zeros(0, np.int32),
        np.zeros(0, np.uint16),
        [],
    )
    head, buffer, digest = _stream(empty)
    back = parse(head, buffer, digest)
    assert len(back.ids) == 0 and back.vocabulary == []


def test_damaged_streams_are_refused() -> None:
    saved = _saved(np.random.default_rng(2))
    head, buffer, digest = _stream(saved)
    flipped = bytearray(buffer)
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(Unusable, match="contents"):
        parse(head, flipped, hashlib.sha256(flipped).hexdigest())
    with pytest.raises(Unusable, match="contents"):
        parse(head, buffer[:-8], digest)
    with pytest.raises(Unusable, match="format"):
        check_head(head | {"format": _pg_snapshot.FORMAT + 1})
    with pytest.raises(Unusable, match="incomplete"):
        check_head({k: v for k, v in head.items() if k != "sha256"})
    moved = [list(a) for a in head["arrays"]]
    moved[1][2] += 8
    with pytest.raises(Unusable, match="not where"):
        check_head(head | {"arrays": moved})


def test_inconsistent_arrays_are_refused_even_with_a_matching_digest() -> None:
    """A writer's bug, not the disk's: positions past the chunks, ids out of order."""
    rng = np.random.default_rng(3)
    good = _saved(rng)
    chunk = good.chunk.copy()
    chunk[0] = len(good.ids)
    ids = good.ids[::-1].copy()
    for bad in (
        Saved(good.ids, good.lengths, good.terms, good.start, chunk, good.tf, good.vocabulary),
        Saved(ids, good.lengths, good.terms, good.start, good.chunk, good.tf, good.vocabulary),
        Saved(good.ids, good.lengths, good.terms, good.start, good.chunk, good.tf, ["a"]),
    ):
        head, buffer, digest = _stream(bad)
        with pytest.raises(Unusable):
            parse(head, buffer, digest)


def test_a_term_cannot_hold_the_separator() -> None:
    saved = _saved(np.random.default_rng(4), terms=2)
    broken = Saved(*[getattr(saved, f) for f in Saved.__slots__[:-1]], ["a\x00b", "c"])
    with pytest.raises(Unusable, match="NUL"):
        head_of(broken, 1)


class _Pieces:
    """An array given in pieces of ``size``, claiming ``length`` entries."""

    def __init__(self, array: np.ndarray[Any, Any], size: int, length: int | None = None):
        self.array, self.size = array, size
        self.length = len(array) if length is None else length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Any:
        return (self.array[i : i + self.size] for i in range(0, len(self.array), self.size))


def _streamed(saved: Saved, size: int, claimed: int | None = None) -> Streamed:
    return Streamed(
        saved.ids,
        saved.lengths,
        saved.terms,
        saved.start,
        _Pieces(saved.chunk, size, claimed),
        _Pieces(saved.tf, size),
        saved.vocabulary,
    )


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_entries_given_in_pieces_are_saved_as_the_whole_arrays(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pg_snapshot, "PART_BYTES", 64)
    saved = _saved(np.random.default_rng(3))
    whole = _stream(saved)
    assert _stream(_streamed(saved, size)) == whole
    assert whole[0]["covered"] == int(saved.ids[-1])


@pytest.mark.parametrize("claimed", [-1, 1])
def test_pieces_that_are_not_what_the_head_says_are_not_saved(claimed: int) -> None:
    saved = _saved(np.random.default_rng(4))
    wrong = _streamed(saved, 5, len(saved.chunk) + claimed)
    head, arrays = head_of(wrong, 3)
    with pytest.raises(ValueError, match=r"chunk is (longer|shorter) than its head says"):
        b"".join(parts(head, arrays))
