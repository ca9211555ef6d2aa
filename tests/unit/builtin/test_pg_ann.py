"""Vector graphs built and extended in a child process (``ragtide.builtin._pg_ann``): the
graph a replica gets back finds what was added, says what it covers, and a child that
fails or is left early is reported and gone."""

from __future__ import annotations

import numpy as np
import pytest

from ragtide.builtin import _pg_ann
from ragtide.builtin._pg_ann import Graph

DIM = 8


def _unit(rng: np.random.Generator, rows: int, dim: int = DIM) -> np.ndarray:
    matrix = rng.normal(size=(rows, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


async def _built(keys: np.ndarray, unit: np.ndarray) -> Graph:
    """A graph of ``unit`` keyed ``keys``, made the way ``_pg_ann.build`` makes one."""
    async with _pg_ann._Child(None) as child:
        await child.send(keys, unit)
        count, buffer = await child.result()
    head = {"embedder": "e", "dim": unit.shape[1], "covered": int(keys[-1]), "count": count}
    return _pg_ann.from_stream(head, buffer)


def _nearest(graph: Graph, unit: np.ndarray) -> list[int]:
    return [int(graph.search(row, 1, 64)[0]) for row in unit]


@pytest.mark.anyio
async def test_an_extended_graph_finds_the_old_vectors_and_the_new() -> None:
    rng = np.random.default_rng(1)
    old, new = _unit(rng, 300), _unit(rng, 50)
    graph = await _built(np.arange(1, 301, dtype=np.int64), old)
    assert (graph.count, graph.covered, graph.dim) == (300, 300, DIM)
    assert _nearest(graph, old[:20]) == list(range(1, 21))
    grown = await _pg_ann.extend(graph, np.arange(1001, 1051, dtype=np.int64), new, 1100)
    assert (grown.count, grown.covered, grown.embedder) == (350, 1100, "e")
    assert _nearest(grown, new) == list(range(1001, 1051))
    assert _nearest(grown, old[:20]) == list(range(1, 21))
    assert graph.count == 300 and _nearest(graph, new[:5]) != list(range(1001, 1006))
    # What is saved of it (its buffer) is the graph another replica reads.
    again = _pg_ann.from_stream(grown.described, grown.buffer.copy())
    assert _nearest(again, new) == list(range(1001, 1051))


@pytest.mark.anyio
async def test_the_childs_refusal_is_reported() -> None:
    rng = np.random.default_rng(2)
    graph = await _built(np.arange(1, 41, dtype=np.int64), _unit(rng, 40))
    keys = np.arange(100, 110, dtype=np.int64)
    with pytest.raises(RuntimeError, match="vectors of 9 dimensions for a graph of 8"):
        await _pg_ann.extend(graph, keys, _unit(rng, 10, dim=9), 200)


@pytest.mark.anyio
async def test_a_child_left_early_is_killed() -> None:
    rng = np.random.default_rng(3)
    async with _pg_ann._Child(None) as child:
        await child.send(np.arange(1, 11, dtype=np.int64), _unit(rng, 10))
        process = child._process
        assert process is not None and process.poll() is None
    assert process.returncode is not None  # gone, not left behind


def test_bytes_that_are_not_a_graph_are_refused() -> None:
    head = {"embedder": "e", "dim": DIM, "covered": 5, "count": 5}
    with pytest.raises(ValueError):  # what _pg_local takes as an unusable saved graph
        _pg_ann.from_stream(head, np.zeros(64, np.uint8))
