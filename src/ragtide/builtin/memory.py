"""In-process conversation memory for the embedded default (one process, nothing shared)."""

from __future__ import annotations

import time
from collections import OrderedDict

from pydantic import BaseModel, Field

from ragtide.types import ChatTurn

__all__ = ["InMemoryMemoryStore"]


class InMemoryMemoryStore:
    """``MemoryStore`` (entry point ``memory``): a bounded LRU of sessions with a TTL."""

    class Config(BaseModel):
        max_sessions: int = Field(10_000, gt=0)
        max_turns: int = Field(200, gt=0, description="Turns kept per session (oldest dropped).")
        ttl_seconds: float = Field(86_400, gt=0, description="Idle time before a session expires.")

    def __init__(self, config: Config) -> None:
        self._config = config
        self._sessions: OrderedDict[tuple[str, str], tuple[float, list[ChatTurn]]] = OrderedDict()

    async def ping(self) -> None:
        return None

    def _get(self, key: tuple[str, str]) -> list[ChatTurn] | None:
        entry = self._sessions.get(key)
        if entry is None:
            return None
        touched, turns = entry
        if time.monotonic() - touched > self._config.ttl_seconds:
            del self._sessions[key]
            return None
        return turns

    async def load(self, namespace: str, session_id: str, limit: int = 20) -> list[ChatTurn]:
        turns = self._get((namespace, session_id))
        if not turns or limit <= 0:
            return []
        return list(turns[-limit:])

    async def append(self, namespace: str, session_id: str, *turns: ChatTurn) -> None:
        key = (namespace, session_id)
        stored = self._get(key) or []
        stored.extend(turns)
        del stored[: -self._config.max_turns]
        self._sessions[key] = (time.monotonic(), stored)
        self._sessions.move_to_end(key)
        while len(self._sessions) > self._config.max_sessions:
            self._sessions.popitem(last=False)

    async def delete(self, namespace: str, session_id: str) -> bool:
        return self._sessions.pop((namespace, session_id), None) is not None

    async def delete_namespace(self, namespace: str) -> int:
        doomed = [key for key in self._sessions if key[0] == namespace]
        for key in doomed:
            del self._sessions[key]
        return len(doomed)
