"""Answer caches: the same question about unchanged documents is answered once.

Keys come from :func:`cache_key`, a pure function of the namespace's generation, the
condensed (standalone) query and a fingerprint of every setting that shapes an answer
(model, prompt version, retrieval parameters). When a namespace's documents change the
caller calls ``invalidate``, which bumps the generation in O(1): old entries are not
deleted, they just become unreachable and expire on their own. Read the generation
*before* computing an answer and store the answer under that key, so an answer computed
while the documents changed is filed under the old generation and never served::

    key, hit = await lookup(cache, namespace, intent.query, fingerprint)
    if hit is None:
        answer = ...
        await cache.put(namespace, key, to_dict(answer))

``get`` returns ``None`` on a miss, so the caller counts hits and misses for metrics.
``RedisAnswerCache`` raises ``BackendUnavailable`` when Redis is down; callers will
usually log it and carry on without the cache.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ragtide.builtin.redis_memory import RedisClient, RedisConnectionConfig, key_part, redis_errors
from ragtide.caching import cache_key, lookup, normalise_query
from ragtide.components import AnswerCache

if TYPE_CHECKING:
    pass

__all__ = [
    "AnswerCache",
    "InMemoryAnswerCache",
    "RedisAnswerCache",
    "cache_key",
    "lookup",
    "normalise_query",
]

logger = logging.getLogger(__name__)


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _load(raw: str | bytes) -> dict[str, Any] | None:
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        logger.warning("ignored an unreadable cache entry")
        return None
    return value


class InMemoryAnswerCache:
    """``AnswerCache`` for one process: a bounded LRU whose entries expire after a TTL.

    Values are stored as JSON, like in Redis, so both caches hand back fresh copies with
    the same types.
    """

    class Config(BaseModel):
        enabled: bool = True
        ttl_seconds: float = Field(3600, gt=0)
        max_entries: int = Field(10_000, gt=0)

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._generations: dict[str, int] = {}

    async def ping(self) -> None:
        return None

    async def generation(self, namespace: str) -> int:
        return self._generations.get(namespace, 0)

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        if not self._config.enabled:
            return None
        entry = self._entries.get((namespace, key))
        if entry is None:
            return None
        expires_at, raw = entry
        if self._clock() >= expires_at:
            del self._entries[(namespace, key)]
            return None
        self._entries.move_to_end((namespace, key))
        return _load(raw)

    async def put(self, namespace: str, key: str, value: Mapping[str, Any]) -> None:
        if not self._config.enabled:
            return
        entry = (self._clock() + self._config.ttl_seconds, _dump(value))
        self._entries[(namespace, key)] = entry
        self._entries.move_to_end((namespace, key))
        while len(self._entries) > self._config.max_entries:
            self._entries.popitem(last=False)

    async def invalidate(self, namespace: str) -> int:
        generation = self._generations[namespace] = self._generations.get(namespace, 0) + 1
        return generation


class RedisAnswerCache(RedisClient):
    """``AnswerCache`` shared by every replica: one expiring string per entry.

    Keys: ``{prefix}:c:{namespace}:{key}`` for entries, ``{prefix}:v:{namespace}`` for the
    generation counter (never expires, so a generation is never reused). When disabled it
    opens no connection and every ``get`` misses.
    """

    class Config(RedisConnectionConfig):
        enabled: bool = True
        ttl_seconds: int = Field(3600, gt=0)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._config = config

    async def start(self) -> None:
        if self._config.enabled:  # disabled: no connection at all
            await super().start()

    def _entry_key(self, namespace: str, key: str) -> str:
        return f"{self._config.key_prefix}:c:{key_part(namespace)}:{key_part(key)}"

    def _generation_key(self, namespace: str) -> str:
        return f"{self._config.key_prefix}:v:{key_part(namespace)}"

    async def ping(self) -> None:
        if self._config.enabled:
            await self._ping()

    async def generation(self, namespace: str) -> int:
        if not self._config.enabled:
            return 0
        async with redis_errors("cache generation", self._config.retry_after_s):
            raw = await self._redis.get(self._generation_key(namespace))
        return int(raw) if raw is not None else 0

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        if not self._config.enabled:
            return None
        async with redis_errors("cache get", self._config.retry_after_s):
            raw = await self._redis.get(self._entry_key(namespace, key))
        return None if raw is None else _load(raw)

    async def put(self, namespace: str, key: str, value: Mapping[str, Any]) -> None:
        if not self._config.enabled:
            return
        payload = _dump(value)
        async with redis_errors("cache put", self._config.retry_after_s):
            await self._redis.set(
                self._entry_key(namespace, key), payload, ex=self._config.ttl_seconds
            )

    async def invalidate(self, namespace: str) -> int:
        if not self._config.enabled:
            return 0
        async with redis_errors("cache invalidate", self._config.retry_after_s):
            generation: int = await self._redis.incr(self._generation_key(namespace))
        return generation
