"""OpenAIEmbedder's own logic: reading an embeddings response, config checks.

The wire protocol against a real server is tests/integration/test_llm_embeddings.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragtide.builtin.openai_embeddings import OpenAIEmbedder, _vectors
from ragtide.errors import ConfigError, UpstreamError


def body(*embeddings: object, indexes: list[int] | None = None) -> bytes:
    order = indexes if indexes is not None else list(range(len(embeddings)))
    pairs = zip(order, embeddings, strict=True)
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in pairs]
    return json.dumps({"object": "list", "data": data}).encode()


def test_rows_follow_the_index_not_the_listing_order() -> None:
    vectors = _vectors(body([0.0, 1.0], [1.0, 0.0], indexes=[1, 0]), 2)
    np.testing.assert_array_equal(vectors, [[1.0, 0.0], [0.0, 1.0]])
    assert vectors.dtype == np.float32


def test_one_vector_per_token_is_mean_pooled() -> None:
    vectors = _vectors(body([[1.0, 0.0], [3.0, 2.0]]), 1)
    np.testing.assert_array_equal(vectors, [[2.0, 1.0]])


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'{"data": {}}',
        body([1.0, 0.0]),  # one vector for two texts
        body([1.0, 0.0], [1.0]),  # sizes differ
        body([1.0, 0.0], [0.0, 1.0], indexes=[0, 0]),
        body("abc", [0.0, 1.0]),
        body([1.0, float("nan")], [0.0, 1.0]).replace(b"NaN", b"1e999"),
        body([], []),
    ],
)
def test_a_malformed_response_is_an_upstream_error(content: bytes) -> None:
    with pytest.raises(UpstreamError, match="malformed response"):
        _vectors(content, 2)


def test_send_dimensions_needs_a_dimension() -> None:
    with pytest.raises(ConfigError, match="send_dimensions needs dimension"):
        OpenAIEmbedder(OpenAIEmbedder.Config(send_dimensions=True))


def test_the_model_id_names_the_model_and_a_shortened_size() -> None:
    plain = OpenAIEmbedder(OpenAIEmbedder.Config(model="m", dimension=8))
    short = OpenAIEmbedder(OpenAIEmbedder.Config(model="m", dimension=8, send_dimensions=True))
    assert (plain.model_id, short.model_id) == ("openai:m", "openai:m-8")


@pytest.mark.anyio
async def test_embedding_before_start_says_so() -> None:
    embedder = OpenAIEmbedder(OpenAIEmbedder.Config(dimension=8))
    with pytest.raises(RuntimeError, match="not started"):
        await embedder.embed_query("x")


def test_the_dimension_is_unknown_until_declared_or_started() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = OpenAIEmbedder().dimension
