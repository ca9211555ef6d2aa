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
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ragtide.builtin.redis_memory import RedisClient, RedisConnectionConfig, key_part, redis_errors
from ragtide.caching import cache_key, lookup, normalise_query
from ragtide.components import AnswerCache
from ragtide.observability import BUDGET_BYTES, BUDGET_EVICTIONS

if TYPE_CHECKING:
    pass

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
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


# What an entry costs beyond its JSON text and key: the tuple, the str headers, the float,
# the OrderedDict node. Rough on purpose: the budget is a ceiling, not an exact RSS.
ENTRY_OVERHEAD_BYTES = 300

_live: weakref.WeakSet[InMemoryAnswerCache] = weakref.WeakSet()
BUDGET_BYTES.labels("answer_cache").set_function(lambda: sum(c.used_bytes for c in list(_live)))
_EVICTED_BYTES = BUDGET_EVICTIONS.labels("answer_cache", "bytes")
_EVICTED_COUNT = BUDGET_EVICTIONS.labels("answer_cache", "entries")
_TOO_LARGE = BUDGET_EVICTIONS.labels("answer_cache", "too_large")


class InMemoryAnswerCache:
    """``AnswerCache`` for one process: a bounded LRU whose entries expire after a TTL.

    Values are stored as JSON, like in Redis, so both caches hand back fresh copies with
    the same types. Bounded by ``max_entries`` and by ``max_bytes`` (UTF-8 size of the
    JSON and the key plus a fixed per-entry overhead); the least recently used entries go
    first, counted in ``ragtide_budget_evictions{store="answer_cache"}``. An answer larger
    than the whole budget is not cached.
    """

    class Config(BaseModel):
        enabled: bool = True
        ttl_seconds: float = Field(3600, gt=0)
        max_entries: int = Field(10_000, gt=0)
        max_bytes: int = Field(
            32 * 1024 * 1024,
            gt=0,
            description="Byte budget of every entry together (JSON text + key + overhead); "
            "least recently used entries are evicted past it.",
        )

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        # (namespace, key) -> (expires_at, JSON text, bytes accounted)
        self._entries: OrderedDict[tuple[str, str], tuple[float, str, int]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._bytes = 0
        _live.add(self)

    @property
    def used_bytes(self) -> int:
        """Bytes accounted now (never above ``max_bytes``)."""
        return self._bytes

    async def ping(self) -> None:
        return None

    async def generation(self, namespace: str) -> int:
        return self._generations.get(namespace, 0)

    def _drop(self, entry_key: tuple[str, str]) -> None:
        entry = self._entries.pop(entry_key, None)
        if entry is not None:
            self._bytes -= entry[2]

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        if not self._config.enabled:
            return None
        entry = self._entries.get((namespace, key))
        if entry is None:
            return None
        expires_at, raw, _ = entry
        if self._clock() >= expires_at:
            self._drop((namespace, key))
            return None
        self._entries.move_to_end((namespace, key))
        return _load(raw)

    async def put(self, namespace: str, key: str, value: Mapping[str, Any]) -> None:
        if not self._config.enabled:
            return
        raw = _dump(value)
        size = len(raw.encode("utf-8")) + len(namespace) + len(key) + ENTRY_OVERHEAD_BYTES
        entry_key = (namespace, key)
        self._drop(entry_key)
        if size > self._config.max_bytes:
            _TOO_LARGE.inc()
            return
        self._entries[entry_key] = (self._clock() + self._config.ttl_seconds, raw, size)
        self._bytes += size
        while len(self._entries) > self._config.max_entries:
            self._drop(next(iter(self._entries)))
            _EVICTED_COUNT.inc()
        while self._bytes > self._config.max_bytes:
            self._drop(next(iter(self._entries)))
            _EVICTED_BYTES.inc()

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
