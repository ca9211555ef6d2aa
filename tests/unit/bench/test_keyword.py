"""The keyword scale bench: both top-k paths measured on one corpus, with the same answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtide.bench.keyword import measure

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA / "scifact").is_dir(), reason="the shared evaluation data is not beside the checkout"
)


def test_both_paths_rank_the_same_chunks_and_the_postings_are_cached(tmp_path: Path) -> None:
    result = measure(DATA, [600], tmp_path)
    (row,) = result["sizes"]
    assert row["same_chunks"] is True
    assert row["chunks"] >= 600 * 0.8  # ~600 chunks asked for, the corpus builder's estimate
    assert row["queries"] > 0
    assert row["exhaustive_ndcg@10"] == row["maxscore_ndcg@10"] > 0
    assert (tmp_path / "keyword-postings-600.pickle").exists()
    again = measure(DATA, [600], tmp_path)["sizes"][0]  # from the cache: the same corpus
    assert (again["chunks"], again["postings"]) == (row["chunks"], row["postings"])
