from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragtide.bench.scale_memory import measure
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.builtin.static_embedder import StaticEmbedder
from ragtide.testing.fakes import make_chunks, make_document


@pytest.mark.anyio
async def test_measures_one_namespace_per_chunk(tmp_path: Path) -> None:
    texts = [f"coral reef number {i} and the heron by the lighthouse" for i in range(40)]
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    vectors = np.asarray(await embedder.embed_documents(texts), np.float32)
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "ragtide.db"))
    await store.start()
    try:
        for d in range(4):
            part = slice(10 * d, 10 * d + 10)
            chunks = make_chunks(f"d{d}", texts[part])
            await store.put_document(
                "default/scale", make_document(f"d{d}"), chunks, vectors[part], "static"
            )
    finally:
        await store.aclose()

    result = await measure(tmp_path, queries=5)

    assert (result["chunks"], result["searches"], result["hnsw"]) == (40, 5, False)
    assert result["accounted_bytes_per_chunk"] > 0
    assert result["load_cpu_s"] >= 0
    assert result["peak_bytes_per_chunk"] >= result["load_peak_bytes_per_chunk"]
    assert set(result["cpu_ms_per_search"]) == {"vector", "vector_second_pass", "keyword"}
    for key in ("bytes_per_chunk_after_first_search", "bytes_per_chunk_after_searches"):
        assert set(result[key]) == {"VmRSS", "RssAnon", "RssFile"}
