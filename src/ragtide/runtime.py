"""The built components of one Ragtide process, started and closed together."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ragtide.components import (
    ChatModel,
    DocumentStore,
    Embedder,
    IntentDetector,
    MemoryStore,
    Retriever,
)
from ragtide.errors import NamespaceNotFound
from ragtide.registry import Registry
from ragtide.settings import Settings
from ragtide.types import validate_namespace

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
    names: dict[str, str] = field(default_factory=dict)
    started: bool = False
    startup_seconds: float = 0.0

    def _components(self) -> list[Any]:
        # Stores first so that a retriever can rely on them; closed in reverse.
        return [
            self.store,
            self.memory,
            self.embedder,
            self.retriever,
            self.intent,
            self.chat_model,
        ]

    async def start(self) -> None:
        began = time.perf_counter()
        for component in self._components():
            start = getattr(component, "start", None)
            if start is not None:
                await start()
        self.started = True
        self.startup_seconds = time.perf_counter() - began
        logger.info(
            "components started", extra={"duration_s": round(self.startup_seconds, 4), **self.names}
        )

    async def aclose(self) -> None:
        self.started = False
        for component in reversed(self._components()):
            close = getattr(component, "aclose", None)
            if close is not None:
                await close()

    async def check_ready(self) -> None:
        """Return when every dependency answers; raise a ``RagtideError`` saying which not."""
        await self.store.ping()
        await self.memory.ping()

    async def require_namespace(self, namespace: str) -> str:
        validate_namespace(namespace)
        if not await self.store.namespace_exists(namespace):
            raise NamespaceNotFound(namespace)
        return namespace


def build_runtime(settings: Settings, registry: Registry | None = None) -> Runtime:
    """Build (but do not start) every component the settings name."""
    registry = registry or Registry.from_entry_points(settings.plugins.allow)
    store = registry.build(DocumentStore, settings.store, data_dir=settings.data_dir)
    return Runtime(
        settings=settings,
        store=store,
        embedder=registry.build(Embedder, settings.embedder),
        retriever=registry.build(Retriever, settings.retriever, store=store),
        intent=registry.build(IntentDetector, settings.intent),
        chat_model=registry.build(ChatModel, settings.chat_model),
        memory=registry.build(MemoryStore, settings.memory),
        names={
            "store": settings.store.use,
            "embedder": settings.embedder.use,
            "retriever": settings.retriever.use,
            "intent": settings.intent.use,
            "chat_model": settings.chat_model.use,
            "memory": settings.memory.use,
        },
    )
