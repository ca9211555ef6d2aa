"""The baked-in embedding models load and answer: run by the Dockerfile's build stage.

Each embedder the settings can name (``static``, ``minilm``) is found by its entry-point
name, started (which loads its weights and checks their sha256, raising ConfigError on a
mismatch) and asked for one vector. The compiled keyword loop (``builtin._maxscore``,
numba) must compile on this platform and rank as exhaustive BM25 does: without it big
namespaces would fall back to numpy at about three times the CPU. Any failure exits
non-zero and so fails the build, not the first pod.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

import numpy as np

EMBEDDERS = entry_points(group="ragtide.embedders")
BAKED_IN = ("static", "minilm")


async def check() -> None:
    for name in BAKED_IN:
        cls = EMBEDDERS[name].load()
        embedder = cls(cls.Config())
        await embedder.start()
        vectors = await embedder.embed_query("readiness probe")
        assert vectors.shape[-1] == embedder.dimension, (name, vectors.shape)
        await embedder.aclose()
        print(f"embedder {name}: {embedder.model_id}, {embedder.dimension} dimensions")


def check_keyword_loop() -> None:
    from ragtide.builtin import _maxscore
    from ragtide.builtin.bm25 import Postings
    from ragtide.builtin.wand import top_k

    assert _maxscore.kernels() is not None, "numba cannot compile the MaxScore loop"
    rng = np.random.default_rng(0)
    ids = [np.unique(rng.integers(0, 50, 8)).astype(np.uint32) for _ in range(500)]
    tfs = [rng.integers(1, 4, len(t)).astype(np.uint16) for t in ids]
    postings = Postings.build(ids, tfs)
    got, _ = top_k(postings, [1, 7, 30], 10, exhaustive_below=0)
    want, _ = top_k(postings, [1, 7, 30], 10, exhaustive_below=1 << 62)
    assert got.tolist() == want.tolist(), (got, want)
    print("keyword loop: compiled, ranks as exhaustive BM25")


if __name__ == "__main__":
    asyncio.run(check())
    check_keyword_loop()
