"""Graphs built in a child process (``ragtide.builtin._ann_child``): the bytes that come
back are a graph of what was sent, one made from a base holds both, and a child that
fails or is left early is reported and gone."""

from __future__ import annotations

import numpy as np
import pytest
from usearch.index import Index

from ragtide.builtin._ann_child import GraphBuild

DIM = 8


def _unit(rng: np.random.Generator, rows: int, dim: int = DIM) -> np.ndarray:
    matrix = rng.normal(size=(rows, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _nearest(data: np.ndarray, unit: np.ndarray) -> list[int]:
    index = Index.restore(data.data, view=True)
    assert index is not None
    return [int(index.search(row, 1).keys[0]) for row in unit]


def test_a_graph_is_built_and_extended_in_batches() -> None:
    rng = np.random.default_rng(1)
    old, new = _unit(rng, 300), _unit(rng, 50)
    with GraphBuild(dim=DIM) as build:
        build.add(np.arange(1, 151), old[:150])
        build.add(np.arange(151, 301), old[150:])
        build.add(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32))  # nothing to add
        count, data = build.result()
    assert count == 300 and _nearest(data, old[::10]) == list(range(1, 301, 10))
    with GraphBuild(dim=DIM, base=data) as build:
        build.add(np.arange(1001, 1051), new)
        grown, more = build.result()
    assert grown == 350
    assert _nearest(more, new) == list(range(1001, 1051))
    assert _nearest(more, old[::10]) == list(range(1, 301, 10))
    assert _nearest(data, new[:1]) != [1001]  # the base is as it was


def test_the_settings_are_the_graphs() -> None:
    rng = np.random.default_rng(2)
    with GraphBuild(dim=DIM, quantisation="f16", connectivity=8) as build:
        build.add(np.arange(20), _unit(rng, 20))
        _, data = build.result()
    index = Index.restore(data.data, view=True)
    assert index is not None and index.connectivity == 8 and "F16" in str(index.dtype)


def test_vectors_of_another_dimension_are_refused_before_they_are_sent() -> None:
    rng = np.random.default_rng(3)
    with GraphBuild(dim=DIM) as build, pytest.raises(ValueError, match="9"):
        build.add(np.arange(5), _unit(rng, 5, dim=9))


def test_a_base_that_is_not_a_graph_is_reported() -> None:
    with (
        pytest.raises(RuntimeError, match="exited with 2"),
        GraphBuild(dim=DIM, base=np.zeros(64, np.uint8)) as build,
    ):
        build.add(np.arange(5), _unit(np.random.default_rng(4), 5))
        build.result()


def test_a_child_left_early_is_killed() -> None:
    with pytest.raises(KeyError), GraphBuild(dim=DIM) as build:
        build.add(np.arange(1, 11), _unit(np.random.default_rng(5), 10))
        process = build._process
        assert process is not None and process.poll() is None
        raise KeyError("left early")
    assert process.returncode is not None  # gone, not left behind
