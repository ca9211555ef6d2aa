"""The vectors ``/search`` ranks with: the static embedder's query path (remembered float32
rows) gives exactly the vectors of its document path, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from ragtide.builtin.static_embedder import StaticEmbedder

pytestmark = pytest.mark.anyio

TEXTS = [
    "microRNA regulates cancer cell proliferation",
    "What is the smallest deployable unit in Kubernetes?",
    "",
    " ",
    "a  b ",
    "<s> x </s><unk>",
    "\u00e9" * 40,
    "word " * 500,
]


async def test_the_query_path_sums_exactly_as_the_document_path() -> None:
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    embedder._ROWS = 8  # forgets its rows many times over
    for _ in range(2):  # the second pass reads remembered rows
        for text in TEXTS:
            query = await embedder.embed_query(text)
            (document,) = await embedder.embed_documents([text])
            assert query.dtype == np.float32 and np.array_equal(query, document), text
    assert 0 < len(embedder._rows) <= 8
    await embedder.aclose()
