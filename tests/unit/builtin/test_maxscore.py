"""``_maxscore.kernels``: compiled once, and what happens when numba cannot cache or is missing."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ragtide.builtin import _maxscore
from ragtide.builtin.bm25 import Postings
from ragtide.builtin.wand import top_k


@pytest.fixture
def fresh_kernels() -> Iterator[None]:
    """``kernels`` forgets what it compiled before and after the test."""
    _maxscore.kernels.cache_clear()
    yield
    _maxscore.kernels.cache_clear()


def _postings() -> Postings:
    rng = np.random.default_rng(3)
    ids = [np.unique(rng.integers(0, 40, 7)).astype(np.uint32) for _ in range(400)]
    tfs = [rng.integers(1, 5, len(t)).astype(np.uint16) for t in ids]
    return Postings.build(ids, tfs)


def test_kernels_are_compiled_once_per_process(fresh_kernels: None) -> None:
    first = _maxscore.kernels()
    assert first is not None
    assert _maxscore.kernels() is first


def test_a_cache_numba_cannot_use_compiles_without_one(
    fresh_kernels: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import numba

    njit = numba.njit
    asked: list[bool] = []

    def no_cache_dir(*args: Any, cache: bool = False, **kwargs: Any) -> Any:
        asked.append(cache)
        if cache:  # as numba raises where no cache directory can be written
            raise RuntimeError("cannot cache function: no locator available")
        return njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", no_cache_dir)
    with caplog.at_level(logging.WARNING, logger="ragtide.builtin._maxscore"):
        loops = _maxscore.kernels()
    assert loops is not None and asked == [True, False]
    assert "compiling it per process" in caplog.text
    postings = _postings()
    got, _ = top_k(postings, [1, 5, 9], 8, exhaustive_below=0)
    want, _ = top_k(postings, [1, 5, 9], 8, exhaustive_below=1 << 62)
    assert got.tolist() == want.tolist()


def test_without_numba_top_k_ranks_with_numpy(
    fresh_kernels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_numba(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numba)
    assert _maxscore.kernels() is None
    postings = _postings()
    got, _ = top_k(postings, [2, 3, 30], 8, exhaustive_below=0)
    want, _ = top_k(postings, [2, 3, 30], 8, exhaustive_below=1 << 62)
    assert got.tolist() == want.tolist()
