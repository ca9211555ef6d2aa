"""OpenAIEmbedder against a real model server: llama-cpp-python in embedding mode.

SmolLM2-135M is a chat model without a pooling layer, so llama-cpp-python's server answers
``/v1/embeddings`` with one vector per token; the embedder mean-pools them. (For such a
model llama-cpp-python 0.3.36 gets every input of a batch but the first wrong, so these
tests send one text a request: ``batch_size: 1``.) The vectors
are no good for retrieval quality, and that is not what is tested: the protocol (batches,
order, dimension, unit length, blank texts), the plugin found by its entry point, a
runtime that ingests and searches with it, and the safety net through the fault proxy —
retries, a stalled server as 504 ``upstream_timeout``, a failing one as 502
``upstream_error``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from ragtide.builtin.openai_embeddings import OpenAIEmbedder
from ragtide.components import Embedder
from ragtide.errors import UpstreamError, UpstreamTimeout
from ragtide.registry import Registry
from ragtide.settings import ComponentSpec
from tests.api.conftest import COOKING, KUBE, make_settings, upload
from tests.llm_server import (
    RESET,
    STALL,
    Fault,
    FaultProxy,
    LlamaServer,
    fault_proxy,
    llama_server_missing,
)

pytestmark = pytest.mark.integration

missing = llama_server_missing()
if missing is not None:
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run the model server tests: {missing}")
    pytest.skip(missing, allow_module_level=True)

HIDDEN = 576  # SmolLM2-135M's hidden size: the size of its (pooled) token vectors


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    llama = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log", embedding=True)
    llama.start()
    yield llama
    llama.stop()


@pytest.fixture(scope="module")
def proxy_server(server: LlamaServer) -> Iterator[FaultProxy]:
    with fault_proxy(server.port) as proxy:
        yield proxy


@pytest.fixture
def proxy(proxy_server: FaultProxy) -> FaultProxy:
    proxy_server.script()  # no faults, counts reset
    return proxy_server


def config(base_url: str, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "base_url": base_url,
        "model": "smollm2",
        "timeout_s": 60.0,
        "max_retries": 0,
        "backoff_s": 0.0,
    }
    return settings | overrides


@contextlib.asynccontextmanager
async def running(base_url: str, **overrides: Any) -> AsyncIterator[OpenAIEmbedder]:
    embedder = OpenAIEmbedder(OpenAIEmbedder.Config(**config(base_url, **overrides)))
    await embedder.start()
    try:
        yield embedder
    finally:
        await embedder.aclose()


TEXTS = [
    "A Pod is the smallest deployable unit in Kubernetes.",
    "Bread is baked from flour, water, salt and yeast.",
    "   ",
    "A Service routes traffic to a set of Pods.",
    "The kubelet enforces memory limits.",
]


@pytest.mark.anyio
async def test_documents_come_back_in_order_as_unit_vectors(proxy: FaultProxy) -> None:
    async with running(proxy.base_url, batch_size=1) as embedder:
        assert embedder.dimension == HIDDEN  # learnt by start() from the server
        probes = proxy.hits
        vectors = await embedder.embed_documents(TEXTS)
        singles = [await embedder.embed_query(text) for text in TEXTS if text.strip()]
    assert proxy.hits - probes == 4 + 4  # 4 visible texts, one a request; 4 queries
    assert vectors.shape == (len(TEXTS), HIDDEN) and vectors.dtype == np.float32
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 3, 4]], 1.0, atol=1e-5)
    assert norms[2] == 0.0  # blank: the zero vector, never sent
    # Each row is its own text's vector.
    np.testing.assert_allclose(vectors[[0, 1, 3, 4]], np.stack(singles), atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-2)


def test_the_plugin_is_found_by_its_entry_point(server: LlamaServer) -> None:
    spec = ComponentSpec(use="openai", config=config(server.base_url, dimension=HIDDEN))
    embedder = Registry.from_entry_points().build(Embedder, spec)
    assert isinstance(embedder, OpenAIEmbedder) and isinstance(embedder, Embedder)
    assert embedder.dimension == HIDDEN and embedder.model_id == "openai:smollm2"


@pytest.mark.anyio
async def test_a_declared_dimension_the_server_does_not_give_is_an_upstream_error(
    server: LlamaServer,
) -> None:
    async with running(server.base_url, dimension=384) as embedder:
        with pytest.raises(UpstreamError, match=r"576-dimensional vectors .* expected 384"):
            await embedder.embed_query("What is a Pod?")


@pytest.mark.anyio
async def test_a_key_from_a_file_never_shows_in_errors(proxy: FaultProxy, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-embed-secret\n")
    proxy.script(Fault.status_code(401))
    with pytest.raises(UpstreamError, match=r"rejected the credentials \(HTTP 401\)") as info:
        async with running(proxy.base_url, api_key_file=str(key)):
            pass  # start() asks the server for the dimension
    assert "sk-embed-secret" not in str(info.value)


@pytest.mark.anyio
async def test_rate_limits_server_errors_and_resets_are_retried(proxy: FaultProxy) -> None:
    async with running(proxy.base_url, dimension=HIDDEN, max_retries=3) as embedder:
        proxy.script(Fault.status_code(429, "0"), Fault.status_code(503), RESET)
        vector = await embedder.embed_query("What is a Pod?")
    assert vector.shape == (HIDDEN,)
    assert proxy.applied == ["status", "status", "reset", "pass"]


@pytest.mark.anyio
async def test_a_stalled_server_times_out_without_a_retry(proxy: FaultProxy) -> None:
    async with running(proxy.base_url, dimension=HIDDEN, timeout_s=0.3, max_retries=3) as e:
        proxy.script(STALL)
        with pytest.raises(UpstreamTimeout, match=r"embedding server did not answer within 0\.3"):
            await e.embed_query("What is a Pod?")
    assert proxy.hits == 1  # a read timeout is never retried


def test_a_runtime_ingests_and_searches_with_it_and_maps_failures(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    def app_settings(**overrides: Any) -> Any:
        embedder = config(proxy.base_url, dimension=HIDDEN, batch_size=1, **overrides)
        return make_settings(
            tmp_path,
            embedder={"use": "openai", "config": embedder},
            retriever={"use": "hybrid", "config": {"fusion": "vector"}},  # vectors alone rank
            answer_cache_enabled=False,
        )

    with TestClient(create_app(app_settings(), configure_logs=False)) as client:
        assert upload(client, "kb", "pods.md", KUBE).status_code == 201
        assert upload(client, "kb", "bread.md", COOKING).status_code == 201
        assert proxy.hits >= 2  # the chunks went to the model server
        body = COOKING.decode()
        found = client.post("/v1/namespaces/kb/search", json={"query": body, "top_k": 1})
        assert found.status_code == 200, found.text
        assert [h["document_id"] for h in found.json()["results"]] == ["bread.md"]

    # The same data, served by a replica whose embedder gives up sooner.
    impatient = app_settings(timeout_s=0.5, max_retries=1)
    with TestClient(create_app(impatient, configure_logs=False)) as client:
        proxy.script(STALL)
        stalled = client.post("/v1/namespaces/kb/search", json={"query": "What is a Pod?"})
        assert stalled.status_code == 504, stalled.text
        assert stalled.json()["error"]["code"] == "upstream_timeout"
        assert proxy.hits == 1  # a read timeout is not retried

        proxy.script(*[Fault.status_code(503)] * 4)
        failing = client.post("/v1/namespaces/kb/search", json={"query": "What is a Pod?"})
        assert failing.status_code == 502, failing.text
        assert failing.json()["error"]["code"] == "upstream_error"
        assert "embedding server returned HTTP 503" in failing.json()["error"]["message"]
        assert proxy.hits == 2  # the first try and one retry
