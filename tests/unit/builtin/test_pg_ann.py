"""Vector graphs of PostgreSQL-backed replicas (``ragtide.builtin._pg_ann``): one extended
in a child process finds what it had and what was added, says what it covers, and is
what another replica reads from its bytes."""

from __future__ import annotations

import numpy as np
import pytest

from ragtide.builtin import _pg_ann
from ragtide.builtin._ann_child import GraphBuild
from ragtide.builtin._pg_ann import Graph

DIM = 8


def _unit(rng: np.random.Generator, rows: int) -> np.ndarray:
    matrix = rng.normal(size=(rows, DIM)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _built(keys: np.ndarray, unit: np.ndarray) -> Graph:
    with GraphBuild(dim=DIM) as build:
        build.add(keys, unit)
        count, data = build.result()
    head = {"embedder": "e", "dim": DIM, "covered": int(keys[-1]), "count": count}
    return _pg_ann.from_stream(head, data)


def _nearest(graph: Graph, unit: np.ndarray) -> list[int]:
    return [int(graph.search(row, 1, 64)[0]) for row in unit]


@pytest.mark.anyio
async def test_an_extended_graph_finds_the_old_vectors_and_the_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(1)
    old, new = _unit(rng, 300), _unit(rng, 50)
    graph = _built(np.arange(1, 301, dtype=np.int64), old)
    assert (graph.count, graph.covered, graph.dim) == (300, 300, DIM)
    monkeypatch.setattr(_pg_ann, "_ROWS", 16)  # sent in several batches
    grown = await _pg_ann.extend(graph, np.arange(1001, 1051, dtype=np.int64), new, 1100)
    assert (grown.count, grown.covered, grown.embedder) == (350, 1100, "e")
    assert _nearest(grown, new) == list(range(1001, 1051))
    assert _nearest(grown, old[:20]) == list(range(1, 21))
    assert graph.count == 300  # searches went on reading it
    # What is saved of it (its buffer) is the graph another replica reads.
    again = _pg_ann.from_stream(grown.described, grown.buffer.copy())
    assert _nearest(again, new) == list(range(1001, 1051))


def test_bytes_that_are_not_a_graph_are_refused() -> None:
    head = {"embedder": "e", "dim": DIM, "covered": 5, "count": 5}
    with pytest.raises(ValueError):  # what _pg_local takes as an unusable saved graph
        _pg_ann.from_stream(head, np.zeros(64, np.uint8))
