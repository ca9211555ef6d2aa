from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragtide.builtin.bm25 import Analyzer, Postings, pack, unpack


def _reference(docs: list[Counter[int]], query: list[int], k1: float, b: float) -> list[float]:
    n = len(docs)
    lengths = [sum(d.values()) for d in docs]
    avgdl = sum(lengths) / n if n and sum(lengths) else 1.0
    out = [0.0] * n
    for term in dict.fromkeys(query):
        df = sum(1 for d in docs if term in d)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.get(term, 0)
            if tf:
                out[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / avgdl))
    return out


def _postings(docs: list[Counter[int]], k1: float = 1.2, b: float = 0.75) -> Postings:
    ids = [np.array(sorted(d), np.uint32) for d in docs]
    tfs = [np.array([d[t] for t in sorted(d)], np.uint16) for d in docs]
    return Postings.build(ids, tfs, k1, b)


@given(
    st.lists(
        st.dictionaries(st.integers(0, 30), st.integers(1, 5), min_size=1), min_size=1, max_size=12
    ),
    st.lists(st.integers(0, 40), min_size=1, max_size=6),
)
def test_scores_equal_the_textbook_formula(raw: list[dict[int, int]], query: list[int]) -> None:
    docs = [Counter(d) for d in raw]
    expected = _reference(docs, query, 1.2, 0.75)
    scores = _postings(docs).scores(list(dict.fromkeys(query)))
    if not any(expected):
        assert scores is None or not scores.any()
    else:
        assert scores is not None
        assert scores == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_no_matching_term_is_none() -> None:
    assert _postings([Counter({1: 1})]).scores([7, 8]) is None


def test_analyzer_stems_and_drops_stopwords() -> None:
    a = Analyzer()
    assert a.terms("The running Pods are limited") == ["run", "pod", "limit"]
    assert a.query_terms("pods pod PODS limits") == ["pod", "limit"]


def test_pack_round_trip() -> None:
    ids, tfs = unpack(*pack(Counter({"b": 2, "a": 70000}), {"a": 5, "b": 1}))
    assert ids.tolist() == [1, 5] and tfs.tolist() == [2, 65535]
