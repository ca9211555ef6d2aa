"""The built components of one Ragtide process, started and closed together."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ragtide.access import AccessPolicy
from ragtide.components import (
    AnswerCache,
    ChatModel,
    DocumentStore,
    Embedder,
    IntentDetector,
    MemoryStore,
    RateLimiter,
    Retriever,
)
from ragtide.errors import NamespaceNotFound, RagtideError
from ragtide.observability import ANSWER_CACHE
from ragtide.registry import Registry
from ragtide.settings import Settings
from ragtide.tools.base import Tool
from ragtide.types import validate_namespace_key

__all__ = ["Runtime", "build_runtime"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Runtime:
    """Everything ``answer()`` and ingestion need, plus the names used as metric labels."""

    settings: Settings
    store: DocumentStore
    embedder: Embedder
    retriever: Retriever
    intent: IntentDetector
    chat_model: ChatModel
    memory: MemoryStore
    cache: AnswerCache | None = None
    limiter: RateLimiter | None = None
    policies: tuple[tuple[str, AccessPolicy], ...] = ()  # a tenant's, set by TenantDirectory
    tools: tuple[Tool, ...] = ()  # the tenant's enabled tools (ragtide.tools), likewise
    names: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""  # of every setting that shapes an answer: part of cache keys
    started: bool = False
    startup_seconds: float = 0.0

    def _components(self) -> list[Any]:
        # Stores first so that a retriever can rely on them; closed in reverse.
        return [
            self.store,
            self.memory,
            self.cache,
            self.limiter,
            self.embedder,
            self.retriever,
            self.intent,
            self.chat_model,
        ]

    async def start(self) -> None:
        """Start every component; they load concurrently (models load on threads)."""
        began = time.perf_counter()
        starts = [c.start() for c in self._components() if c is not None and hasattr(c, "start")]
        await asyncio.gather(*starts)
        self.started = True
        self.startup_seconds = time.perf_counter() - began
        logger.info(
            "components started",
            extra={"duration_s": round(self.startup_seconds, 4), **self.names},
        )

    async def warm(self) -> None:
        """Begin loading what searches will need (a component's ``warm``), for a process
        that serves them; readiness waits for it (``check_ready``)."""
        for component in self._components():
            warm = getattr(component, "warm", None)
            if warm is not None:
                await warm()

    async def aclose(self) -> None:
        self.started = False
        for component in reversed(self._components()):
            if component is None:
                continue
            close = getattr(component, "aclose", None)
            if close is not None:
                await close()

    async def check_ready(self) -> None:
        """Return when every dependency answers; raise a ``RagtideError`` saying which not."""
        await self.store.ping()
        await self.memory.ping()
        if self.cache is not None:
            await self.cache.ping()
        if self.limiter is not None:
            await self.limiter.ping()

    async def documents_changed(self, namespace: str) -> None:
        """Forget cached answers of ``namespace``: its documents changed.

        A cache that is down is logged and counted, never fatal: its entries expire.
        """
        if self.cache is None:
            return
        try:
            await self.cache.invalidate(namespace)
        except RagtideError as exc:
            ANSWER_CACHE.labels("error").inc()
            logger.warning("answer cache not invalidated", extra={"error": exc.code})

    async def require_namespace(self, namespace: str) -> str:
        validate_namespace_key(namespace)
        if not await self.store.namespace_exists(namespace):
            raise NamespaceNotFound(namespace)
        return namespace


def build_runtime(settings: Settings, registry: Registry | None = None) -> Runtime:
    """Build (but do not start) every component the settings name."""
    registry = registry or Registry.from_entry_points(settings.plugins.allow)
    store = registry.build(DocumentStore, settings.store, data_dir=settings.data_dir)
    shaping = {
        name: getattr(settings, name).model_dump(mode="json")
        for name in ("embedder", "retriever", "intent", "chat_model")
    }
    shaping["top_k"] = settings.retrieval.top_k
    chat = settings.chat  # what verification does to an answer shapes it too
    shaping["grounding"] = [chat.grounding, chat.min_support, chat.decline_text]
    fingerprint = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
    return Runtime(
        settings=settings,
        store=store,
        embedder=registry.build(Embedder, settings.embedder),
        retriever=registry.build(Retriever, settings.retriever, store=store),
        intent=registry.build(IntentDetector, settings.intent),
        chat_model=registry.build(ChatModel, settings.chat_model),
        memory=registry.build(MemoryStore, settings.memory),
        cache=registry.build(AnswerCache, settings.answer_cache)
        if settings.answer_cache_enabled
        else None,
        limiter=registry.build(RateLimiter, settings.rate_limiter)
        if settings.rate_limit.enabled or settings.auth.enabled
        else None,
        fingerprint=fingerprint,
        names={
            "store": settings.store.use,
            "embedder": settings.embedder.use,
            "retriever": settings.retriever.use,
            "intent": settings.intent.use,
            "chat_model": settings.chat_model.use,
            "memory": settings.memory.use,
        },
    )
