"""``OpenAIEmbedder``: vectors from any OpenAI-compatible ``/embeddings`` endpoint.

So that a heavy embedding model can live in a model server (vLLM, llama.cpp's server,
Text Embeddings Inference, OpenAI itself) instead of in every API replica. Retries and
failures are the chat model's (``_openai_http``): 429, 5xx and connection resets are
retried with backoff, a timeout is ``UpstreamTimeout`` (504), anything else
``UpstreamError`` (502).

- Texts go up in batches of ``batch_size``, one batch at a time; rows come back in the
  order of the texts whatever order the server lists them in (``index``).
- Every vector is checked against ``dimension`` (declared, or learnt by ``start()`` with
  one short request); a server that answers with another size is an ``UpstreamError``.
- Vectors are scaled to unit length (the ``Embedder`` contract). A server that answers
  with one vector per token (llama-cpp-python's server for a model without a pooling
  layer) has them mean-pooled, as llama.cpp's ``--pooling mean`` would.
- Text without any visible character embeds as the zero vector without a request (the
  API refuses empty input).

The key is given as ``api_key`` (``RAGTIDE_EMBEDDER__CONFIG__API_KEY`` from a Secret) or
by reference as ``api_key_file`` (a mounted Secret, read by ``start()``); it is sent only
in the ``Authorization`` header and never appears in errors or logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ragtide.builtin._models import normalize_rows, not_started
from ragtide.builtin._openai_http import Upstream
from ragtide.components import Vectors
from ragtide.errors import ConfigError, UpstreamError

__all__ = ["OpenAIEmbedder"]

_WHAT = "the embedding server"


class OpenAIEmbedder:
    """``Embedder`` (entry point ``openai``) backed by an OpenAI-compatible embeddings API."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        base_url: str = "https://api.openai.com/v1"
        model: str = "text-embedding-3-small"
        api_key: SecretStr | None = None
        api_key_file: Path | None = Field(
            default=None, description="A file holding the key (a mounted Secret); read at start."
        )
        dimension: int | None = Field(
            default=None,
            gt=0,
            le=65_536,
            description="The vector size; checked on every answer. Unset: asked at start.",
        )
        send_dimensions: bool = Field(
            default=False,
            description="Send `dimensions` (models that can shorten their vectors, such as "
            "text-embedding-3-*); needs `dimension`.",
        )
        batch_size: int = Field(default=64, gt=0, le=2048, description="Texts per request.")
        timeout_s: float = Field(default=30.0, gt=0, description="Per read, write or pool wait.")
        connect_timeout_s: float = Field(default=5.0, gt=0)
        max_retries: int = Field(default=2, ge=0, le=10)
        backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles.")
        max_backoff_s: float = Field(
            default=10.0, ge=0, description="Longest wait before a retry; longer ones fail."
        )

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        if self._config.send_dimensions and self._config.dimension is None:
            raise ConfigError("openai embedder: send_dimensions needs dimension")
        if self._config.api_key is not None and self._config.api_key_file is not None:
            raise ConfigError("openai embedder: give api_key or api_key_file, not both")
        self._dimension = self._config.dimension
        self._client: httpx.AsyncClient | None = None
        self._upstream = self._make_upstream("")

    def _make_upstream(self, secret: str) -> Upstream:
        c = self._config
        return Upstream(
            _WHAT, c.timeout_s, c.max_retries, c.backoff_s, c.max_backoff_s, secret,
            retried_event="embedding request retried",
        )  # fmt: skip

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise not_started(self)
        return self._dimension

    @property
    def model_id(self) -> str:
        size = f"-{self._config.dimension}" if self._config.send_dimensions else ""
        return f"openai:{self._config.model}{size}"

    async def start(self) -> None:
        if self._client is not None:
            return
        key = await self._key()
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._upstream = self._make_upstream(key)
        self._client = httpx.AsyncClient(
            base_url=self._config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(self._config.timeout_s, connect=self._config.connect_timeout_s),
        )
        if self._dimension is None:
            try:
                self._dimension = (await self._request(["dimension probe"])).shape[1]
            except BaseException:
                await self.aclose()
                raise

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def embed_query(self, text: str) -> Vectors:
        return (await self.embed_documents([text])).reshape(-1)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a sequence of texts, not one str")
        if self._client is None or self._dimension is None:
            raise not_started(self)
        out = np.zeros((len(texts), self._dimension), np.float32)
        rows = [i for i, text in enumerate(texts) if text.strip()]
        size = self._config.batch_size
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            out[batch] = await self._request([texts[i] for i in batch])
        return out

    async def _key(self) -> str:
        c = self._config
        if c.api_key is not None:
            return c.api_key.get_secret_value()
        if c.api_key_file is None:
            return ""
        try:
            return (await anyio.Path(c.api_key_file).read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise ConfigError(
                f"openai embedder: api_key_file {c.api_key_file}: {exc.strerror}"
            ) from None

    async def _request(self, texts: list[str]) -> Vectors:
        """Unit vectors for ``texts`` (none of them blank), in their order."""
        assert self._client is not None
        body: dict[str, Any] = {"model": self._config.model, "input": texts}
        if self._config.send_dimensions:
            body["dimensions"] = self._config.dimension
        response = await self._upstream.post(self._client, "embeddings", body, stream=False)
        vectors = _vectors(response.content, len(texts))
        expected = self._dimension
        if expected is not None and vectors.shape[1] != expected:
            raise UpstreamError(
                f"{_WHAT} returned {vectors.shape[1]}-dimensional vectors for model "
                f"{self._config.model!r}, expected {expected}"
            )
        return normalize_rows(vectors)


def _vectors(content: bytes, count: int) -> Vectors:
    """The ``count`` vectors of an embeddings response, ordered by their ``index``."""
    try:
        data = orjson.loads(content)["data"]
        if not isinstance(data, list) or len(data) != count:
            raise ValueError(f"{count} embeddings asked for, {len(data)} returned")
        ordered = sorted(data, key=lambda item: int(item["index"]))
        if [int(item["index"]) for item in ordered] != list(range(count)):
            raise ValueError("the indexes are not 0..n-1")
        rows = [_pooled(item["embedding"]) for item in ordered]
        vectors = np.stack(rows)
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise UpstreamError(f"{_WHAT} returned a malformed response") from exc
    if vectors.ndim != 2 or vectors.shape[1] == 0 or not np.isfinite(vectors).all():
        raise UpstreamError(f"{_WHAT} returned a malformed response")
    return vectors


def _pooled(embedding: object) -> Vectors:
    """One vector, from a vector or from one vector per token (their mean)."""
    array = np.asarray(embedding, dtype=np.float32)
    if array.ndim == 2 and array.shape[0] > 0:
        pooled: Vectors = array.mean(axis=0, dtype=np.float32)
        return pooled
    if array.ndim != 1:
        raise ValueError("an embedding is a list of numbers (or one list per token)")
    return array
