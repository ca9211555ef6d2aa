"""Role protocols: the seams where a component can be swapped for another.

Every implementation follows one contract (Haystack's): a nested pydantic ``Config``,
a cheap ``__init__(config)``, optional ``async start()`` for loading models or opening
connections, and optional ``async aclose()``. Implementations register under an
entry-point group per role (see ``ragtide.registry``) and are chosen by name.

Isolation is the core's job: every call that touches tenant data takes the namespace
as an explicit argument, and a store must never return data of another namespace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ragtide.types import (
    ApiKeyRecord,
    ChatTurn,
    Chunk,
    DocumentInfo,
    Filter,
    Hit,
    Intent,
    Prompt,
    RateDecision,
    Reply,
    RetrievalRequest,
    SessionInfo,
    TenantRecord,
    TenantUsage,
)

__all__ = [
    "AnswerCache",
    "BulkLoader",
    "ChatModel",
    "DocumentStore",
    "Embedder",
    "IntentDetector",
    "MemoryStore",
    "RateLimiter",
    "ResultStore",
    "Retriever",
    "TenantStore",
    "Vectors",
]

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns text into unit-length vectors; queries and documents may be embedded differently."""

    @property
    def dimension(self) -> int: ...

    @property
    def model_id(self) -> str:
        """Identifies the vector space: vectors of different ids must never be compared."""
        ...

    async def embed_query(self, text: str) -> Vectors: ...

    async def embed_documents(self, texts: Sequence[str]) -> Vectors: ...


@runtime_checkable
class DocumentStore(Protocol):
    """Documents, chunks, a keyword index and vectors, partitioned by namespace."""

    async def ping(self) -> None:
        """Return when the store answers; raise ``BackendUnavailable`` otherwise."""
        ...

    async def create_namespace(self, namespace: str) -> bool:
        """Create the namespace; return False if it already existed."""
        ...

    async def namespace_exists(self, namespace: str) -> bool: ...

    async def list_namespaces(self, prefix: str = "") -> list[str]:
        """Namespace keys starting with ``prefix`` (``"<tenant>/"``), in byte order."""
        ...

    async def delete_namespace(self, namespace: str) -> bool:
        """Remove the namespace with every document, chunk and vector; False if unknown."""
        ...

    async def get_document(self, namespace: str, document_id: str) -> DocumentInfo | None: ...

    async def document_chunks(
        self,
        namespace: str,
        document_id: str,
        *,
        limit: int | None = None,
        after: int | None = None,
    ) -> list[Chunk]:
        """The document's chunks in ordinal order: at most ``limit``, ordinals greater than
        ``after``; empty for an unknown document."""
        ...

    async def list_documents(
        self, namespace: str, *, limit: int | None = None, after: str | None = None
    ) -> list[DocumentInfo]:
        """Documents in id order (byte-wise): at most ``limit``, ids greater than ``after``."""
        ...

    async def put_document(
        self,
        namespace: str,
        document: DocumentInfo,
        chunks: Sequence[Chunk],
        vectors: Vectors,
        embedder_id: str,
    ) -> str | None:
        """Create or replace a document and all its chunks atomically.

        Returns the ``content_hash`` the document had just before this write, or None if
        there was no such document: read in the same atomic step as the write, so of
        concurrent writers of one new id exactly one gets None (the ingest pipeline's
        ``created``; an equal hash is ``unchanged``, another one ``updated``).
        """
        ...

    async def delete_document(self, namespace: str, document_id: str) -> bool: ...

    async def keyword_search(
        self, namespace: str, text: str, limit: int, filter: Filter
    ) -> list[Hit]: ...

    async def vector_search(
        self, namespace: str, vector: Vectors, limit: int, filter: Filter
    ) -> list[Hit]: ...

    async def counts(self, namespace: str) -> tuple[int, int]:
        """(documents, chunks) in the namespace."""
        ...


@runtime_checkable
class BulkLoader(Protocol):
    """A document store that loads a large corpus faster with its search indexes built
    after the load instead of kept current row by row (the PostgreSQL store).
    ``ragtide ingest --bulk`` uses it; searches stay correct, and slower, meanwhile."""

    def bulk_load(self) -> AbstractAsyncContextManager[None]: ...


@runtime_checkable
class HybridSearcher(Protocol):
    """A document store that gives both lists of a hybrid search in one round trip to
    its database (the PostgreSQL store, ranking with its replica-local indexes). The
    hybrid retriever asks it first; None asks for each list on its own."""

    async def hybrid_search(
        self, namespace: str, text: str, vector: Vectors, limit: int, filter: Filter
    ) -> tuple[list[Hit], list[Hit]] | None:
        """``keyword_search``'s and ``vector_search``'s hits, the same as each would
        give, or None when it cannot give both this way."""
        ...


@runtime_checkable
class TenantStore(Protocol):
    """Tenants and their API keys, in the document store's database so that every
    replica sees the same (both built-in stores implement it)."""

    async def get_tenant(self, tenant: str) -> TenantRecord | None: ...

    async def list_tenants(self) -> list[TenantRecord]: ...

    async def put_tenant(
        self, tenant: str, config: Mapping[str, Any], webhook_secret: str
    ) -> tuple[TenantRecord, bool]:
        """Create or replace; an existing tenant keeps its secret and creation time.
        Returns the stored record and whether it was created."""
        ...

    async def delete_tenant(self, tenant: str) -> bool:
        """Remove the tenant and its keys (its namespaces are the caller's to delete)."""
        ...

    async def add_key(self, key: ApiKeyRecord) -> None: ...

    async def key_by_hash(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def list_keys(self, tenant: str) -> list[ApiKeyRecord]: ...

    async def revoke_key(self, tenant: str, key_id: str, at: float) -> bool:
        """Mark a key revoked; False when the tenant has no such (unrevoked) key."""
        ...

    async def tenant_usage(self, tenant: str) -> TenantUsage: ...


@runtime_checkable
class Retriever(Protocol):
    """Return the chunks most relevant to the request, never outside its namespace or filter."""

    async def retrieve(self, request: RetrievalRequest) -> list[Hit]: ...


@runtime_checkable
class IntentDetector(Protocol):
    """Decide what a turn asks for and condense a follow-up into a standalone query."""

    async def detect(self, message: str, history: Sequence[ChatTurn]) -> Intent: ...


@runtime_checkable
class ChatModel(Protocol):
    """Answer a prompt, citing ``Prompt.hits`` by their 1-based index as ``[n]``."""

    @property
    def model_id(self) -> str: ...

    async def generate(self, prompt: Prompt) -> Reply: ...

    def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        """Yield the answer text in pieces; the concatenation equals ``generate``'s text."""
        ...


@runtime_checkable
class MemoryStore(Protocol):
    """Conversation history per (namespace, session)."""

    async def ping(self) -> None: ...

    async def load(self, namespace: str, session_id: str, limit: int = 20) -> list[ChatTurn]:
        """The last ``limit`` turns, oldest first; empty for an unknown session."""
        ...

    async def append(self, namespace: str, session_id: str, *turns: ChatTurn) -> None:
        """Add turns atomically, after any turns already stored."""
        ...

    async def delete(self, namespace: str, session_id: str) -> bool: ...

    async def delete_namespace(self, namespace: str) -> int:
        """Forget every session of the namespace; return how many there were."""
        ...

    async def list_sessions(
        self,
        namespace: str,
        *,
        limit: int | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[SessionInfo]:
        """The namespace's live sessions, most recently updated first (ties: greater id
        first): at most ``limit``, only those after ``after`` = (updated_at, id) of the
        previous page's last in that order."""
        ...

    async def rename(self, namespace: str, session_id: str, title: str) -> SessionInfo | None:
        """Give the session ``title`` (kept by later appends); None for an unknown session."""
        ...


@runtime_checkable
class AnswerCache(Protocol):
    """Answers per namespace, keyed by ``ragtide.caching.cache_key``.

    ``invalidate`` makes every entry of a namespace unreachable in O(1) by bumping its
    generation, which is part of every key.
    """

    async def ping(self) -> None: ...

    async def generation(self, namespace: str) -> int: ...

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None: ...

    async def put(self, namespace: str, key: str, value: Mapping[str, Any]) -> None: ...

    async def invalidate(self, namespace: str) -> int: ...


@runtime_checkable
class RateLimiter(Protocol):
    """Admit or refuse ``cost`` tokens for ``key`` (a token bucket or equivalent), and
    count quotas (``add``) with the same backend, so both hold across replicas."""

    async def ping(self) -> None: ...

    async def check(
        self,
        key: str,
        cost: int = 1,
        *,
        rate_per_s: float | None = None,
        burst: int | None = None,
    ) -> RateDecision:
        """``rate_per_s``/``burst`` override the configured bucket for this key."""
        ...

    async def add(self, key: str, amount: int, ttl_s: int) -> int:
        """Add ``amount`` to a counter that expires ``ttl_s`` after it was created;
        return the new total (atomic)."""
        ...


@runtime_checkable
class ResultStore(Protocol):
    """Task records (JSON objects) per (namespace, task id), shared by every process.

    The API creates a record when a task is submitted and workers update it; records
    expire after a TTL. ``create`` is the only conditional write: it is what makes one
    idempotency key yield one task.
    """

    async def ping(self) -> None: ...

    async def get(self, namespace: str, task_id: str) -> dict[str, Any] | None: ...

    async def create(self, namespace: str, task_id: str, record: Mapping[str, Any]) -> bool:
        """Store ``record`` unless the task has one already; False when it had."""
        ...

    async def put(self, namespace: str, task_id: str, record: Mapping[str, Any]) -> None:
        """Store ``record``, replacing any earlier one (and restarting its TTL)."""
        ...

    async def delete(self, namespace: str, task_id: str) -> bool: ...
